// The rules every JSON text wpack reads shares (safetensors headers and index files, .wpk
// metadata), on top of nlohmann's parser.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace wpack::detail {

// Arrays and objects nested deeper than this are refused (serde_json's recursion limit, which the
// safetensors reference implementation parses with); deeper input would exhaust the parser's stack.
inline constexpr int kMaxJsonDepth = 128;

// Why `text` is not JSON that wpack reads, found before parsing; empty when nothing is. A NUL byte
// (nlohmann stops at one, so "{}\0junk" would parse; JSON text never holds a raw NUL) and a leading
// UTF-8 byte order mark (nlohmann skips it; serde_json and Python's json refuse it).
inline std::string json_text_problem(std::string_view text) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    return "NUL byte at offset " + std::to_string(nul);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") return "it starts with a byte order mark";
  return {};
}

// For a parser callback: whether this event opens an array or object deeper than kMaxJsonDepth.
inline bool json_too_deep(int depth, nlohmann::json::parse_event_t event) {
  using Event = nlohmann::json::parse_event_t;
  return (event == Event::object_start || event == Event::array_start) && depth >= kMaxJsonDepth;
}

}  // namespace wpack::detail
