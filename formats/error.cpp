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

std::string one_line(const std::string& text) {
  static const char kHex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < text.size() && static_cast<unsigned char>(text[i]) >= 0x20 && text[i] != 0x7f) ++i;
  if (i == text.size()) return text;  // the usual case: nothing to escape
  std::string out = text.substr(0, i);
  for (; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += text[i];
    }
  }
  return out;
}

}  // namespace wpack
