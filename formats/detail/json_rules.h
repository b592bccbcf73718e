// The rules every JSON text wpack reads shares (safetensors headers and index files, .wpk
// metadata), on top of nlohmann's parser, and the one way wpack parses such a text.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace wpack::detail {

// Arrays and objects nested deeper than this are refused (serde_json's recursion limit, which the
// safetensors reference implementation parses with); deeper input would exhaust the parser's stack.
inline constexpr int kMaxJsonDepth = 128;

// The most values parse_json_members keeps of one member (each scalar, array and object counts
// one): a safetensors tensor entry holds 6 plus its rank. More are dropped, and the member is
// marked truncated; the kept ones start the member's JSON text as it would be printed, far past
// the 60 characters an error message quotes.
inline constexpr size_t kMaxMemberValues = 4096;

// Why `text` is not JSON that wpack reads, found before parsing; empty when nothing is. A NUL byte
// (nlohmann stops at one, so "{}\0junk" would parse; JSON text never holds a raw NUL) and a leading
// UTF-8 byte order mark (nlohmann skips it; serde_json and Python's json refuse it).
std::string json_text_problem(std::string_view text);

// What check_json found wrong, for the caller to word: `problem` is a sentence without the file.
struct JsonProblem {
  enum class Kind { kInvalid, kTooDeep, kDuplicateKey } kind;
  std::string problem;
  std::string key;         // kDuplicateKey: the key
  bool top_level = false;  // kDuplicateKey: in the top-level object
};

// Checks `text` in one SAX pass that keeps no values: json_text_problem, valid UTF-8 JSON, nesting
// up to kMaxJsonDepth and, with `unique_keys`, no key twice in one object (nlohmann keeps the last
// one silently). Returns whether the top-level value is an object. Throws JsonProblem.
bool check_json(std::string_view text, bool unique_keys);

// Where parse_json_members hands a text's values. A value passed is the callee's to move from.
struct JsonMembers {
  // Each member of the top-level object in file order, once its value is complete; `truncated`:
  // it held more than kMaxMemberValues values and only the first ones were kept.
  std::function<void(const std::string& key, nlohmann::json& value, bool truncated)> member;
  // The top-level member whose own members are handed over one by one, a map that may be large
  // (a header's __metadata__, an index's weight_map). When its value is an object, each of the
  // object's members goes to `flat_member` (truncated as a member would be) and then `member` gets
  // the key with an empty object; any other value goes to `member` as usual.
  std::string_view flat_key;
  std::function<void(const std::string& key, nlohmann::json& value, bool truncated)> flat_member;
  // Optional: called as each occurrence of the flat member's object opens, before its members (a
  // text read without unique keys may repeat it; as in nlohmann's parse, the last should win).
  std::function<void()> flat_begin;
};

// Parses `text` one top-level member at a time: check_json first (the whole text: a syntax error or
// a duplicate key anywhere is found before any member is handed over), then a second SAX pass that
// builds each member's value, hands it to `sink` and drops it. Memory follows the largest member
// and what the callee keeps, not the whole text (nlohmann's values take 10–40 times the text they
// are read from). Returns the top-level value (kept as a member's, at most kMaxMemberValues
// values) when it is not an object, nullopt when it is. Throws JsonProblem, and what `sink` throws.
std::optional<nlohmann::json> parse_json_members(std::string_view text, bool unique_keys, const JsonMembers& sink);

}  // namespace wpack::detail
