#include "formats/error.h"

namespace wpack {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kIo: return "io";
    case ErrorCode::kFormat: return "format";
    case ErrorCode::kCorrupt: return "corrupt";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kMismatch: return "mismatch";
    case ErrorCode::kExists: return "exists";
  }
  return "unknown";
}

}  // namespace wpack
