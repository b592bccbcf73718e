// The rules every JSON text wpack reads shares (safetensors headers and index files, .wpk
// metadata), on top of nlohmann's parser, and the one way wpack parses such a text.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace wpack::detail {

// Arrays and objects nested deeper than this are refused (serde_json's recursion limit, which the
// safetensors reference implementation parses with); deeper input would exhaust the parser's stack.
inline constexpr int kMaxJsonDepth = 128;

// Why `text` is not JSON that wpack reads, found before parsing; empty when nothing is. A NUL byte
// (nlohmann stops at one, so "{}\0junk" would parse; JSON text never holds a raw NUL) and a leading
// UTF-8 byte order mark (nlohmann skips it; serde_json and Python's json refuse it).
std::string json_text_problem(std::string_view text);

// A JSON text parsed by parse_json.
struct ParsedJson {
  nlohmann::json value;
  // The keys of the top-level object in file order (nlohmann::json keeps an object's keys sorted),
  // and those of its member `keys_of` (parse_json's argument) when that is an object.
  std::vector<std::string> top_keys;
  std::vector<std::string> member_keys;
};

// What parse_json found wrong, for the caller to word: `problem` is a sentence without the file.
struct JsonProblem {
  enum class Kind { kInvalid, kTooDeep, kDuplicateKey } kind;
  std::string problem;
  std::string key;         // kDuplicateKey: the key
  bool top_level = false;  // kDuplicateKey: in the top-level object
};

// Parses `text` in linear time: one SAX pass checks the rules (json_text_problem, nesting up to
// kMaxJsonDepth, with `unique_keys` no key twice in one object; nlohmann keeps the last one
// silently) and records the key order (ParsedJson), then the value is built without a parser
// callback (nlohmann's callback parser rescans the enclosing container at each closing object,
// and its ordered_json inserts keys by linear search: both quadratic). Throws JsonProblem.
ParsedJson parse_json(std::string_view text, bool unique_keys, std::string_view keys_of = {});

}  // namespace wpack::detail
