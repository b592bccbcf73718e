// wpack's one error model.
//
// Library code reports failure by throwing wpack::Error: a fixed error code plus a one-line message
// that names the file and, where it applies, the tensor and tile. Nothing in the library catches and
// hides an Error; only cli/ turns it into a message on stderr and an exit code (1 for bad input or
// I/O, 2 for usage). Untrusted sizes go through checked_add/checked_mul, never through assert().
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace wpack {

enum class ErrorCode {
  kIo,            // open/read/write/rename failed (errno text in the message)
  kFormat,        // the file is not of the expected format, or violates its rules
  kCorrupt,       // a checksum does not match, or decoded data is inconsistent
  kUnsupported,   // valid but not supported (newer version, unknown dtype, ...)
  kInvalidArgument,  // a caller or user passed a bad option
  kMismatch,      // verify --against found decoded data that differs from the source
  kExists,        // the output exists and -f was not given
};

const char* error_code_name(ErrorCode code);

// `text` with control characters (newline, carriage return, tab, ESC, ... and DEL) written as \xNN,
// so that a message stays one line whatever a file put in a name.
std::string one_line(const std::string& text);

class Error : public std::runtime_error {
 public:
  // The message is kept to one line (one_line()): names read from files may hold any byte.
  Error(ErrorCode code, const std::string& message) : std::runtime_error(one_line(message)), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Checked arithmetic on untrusted sizes. `what` names the quantity for the error message.
inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw Error(ErrorCode::kFormat, what + ": size overflows 64 bits");
  return r;
}
inline uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(ErrorCode::kFormat, what + ": size overflows 64 bits");
  return r;
}

}  // namespace wpack
