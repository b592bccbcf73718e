#include "formats/detail/json_rules.h"

#include <set>
#include <utility>
#include <vector>

namespace wpack::detail {
namespace {

using Json = nlohmann::json;

// The SAX pass of check_json: nesting, duplicate keys, the top-level value's kind. Values are not
// kept.
class Scanner final : public nlohmann::json_sax<Json> {
 public:
  explicit Scanner(bool unique_keys) : unique_keys_(unique_keys) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }

  bool start_object(std::size_t) override {
    if (levels_.empty()) top_is_object_ = true;
    return open();
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }

  bool key(string_t& key) override {
    if (unique_keys_ && !levels_.back().insert(key).second)
      throw JsonProblem{JsonProblem::Kind::kDuplicateKey, "has duplicate key", key, levels_.size() == 1};
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw JsonProblem{JsonProblem::Kind::kInvalid, e.what(), {}, false};
  }

  bool top_is_object() const { return top_is_object_; }

 private:
  bool open() {
    if (levels_.size() >= static_cast<size_t>(kMaxJsonDepth))
      throw JsonProblem{JsonProblem::Kind::kTooDeep,
                        "nests arrays and objects deeper than " + std::to_string(kMaxJsonDepth) + " levels",
                        {},
                        false};
    levels_.emplace_back();  // with unique_keys_: the keys seen so far in this container
    return true;
  }
  bool close() {
    levels_.pop_back();
    return true;
  }

  bool unique_keys_;
  std::vector<std::set<std::string>> levels_;
  bool top_is_object_ = false;
};

// One JSON value built from SAX events, keeping at most kMaxMemberValues values (in text order).
class Builder {
 public:
  void reset() {
    root_ = Json();
    open_.clear();
    kept_ = skipped_open_ = 0;
    truncated_ = false;
  }
  // A value: a scalar, or an empty container whose members follow until close(). True when the
  // value built is complete.
  bool value(Json&& v, bool container) {
    if (skipped_open_ > 0 || kept_ >= kMaxMemberValues) {
      truncated_ = true;
      skipped_open_ += container;
      return false;
    }
    ++kept_;
    Json* slot = &root_;
    if (open_.empty()) {
      root_ = std::move(v);
    } else if (open_.back()->is_array()) {
      open_.back()->push_back(std::move(v));
      slot = &open_.back()->back();  // stays valid: nothing more goes into this array while it is open
    } else {
      slot = &(*open_.back())[key_];  // the last of a repeated key wins, as in nlohmann's parse
      *slot = std::move(v);
    }
    if (container) open_.push_back(slot);
    return open_.empty();
  }
  void key(std::string&& k) { key_ = std::move(k); }
  bool close() {
    if (skipped_open_ > 0) {
      --skipped_open_;
      return false;
    }
    open_.pop_back();
    return open_.empty();
  }
  Json& root() { return root_; }
  bool truncated() const { return truncated_; }

 private:
  Json root_;
  std::vector<Json*> open_;  // the containers being filled, innermost last
  std::string key_;          // the key of the next value when the innermost container is an object
  size_t kept_ = 0, skipped_open_ = 0;
  bool truncated_ = false;
};

// The second pass of parse_json_members: builds one value at a time (the top-level value when it is
// not an object, a member's, or a flat member's member), hands it over when it closes, and routes
// keys between members to the right place.
class MemberParser final : public nlohmann::json_sax<Json> {
 public:
  explicit MemberParser(const JsonMembers& sink) : sink_(sink) {}

  bool null() override { return value(nullptr, false); }
  bool boolean(bool v) override { return value(v, false); }
  bool number_integer(number_integer_t v) override { return value(v, false); }
  bool number_unsigned(number_unsigned_t v) override { return value(v, false); }
  bool number_float(number_float_t v, const string_t&) override { return value(v, false); }
  bool string(string_t& v) override { return value(std::move(v), false); }
  bool binary(binary_t& v) override { return value(Json::binary(std::move(v)), false); }
  bool start_object(std::size_t) override { return value(Json::object(), true); }
  bool start_array(std::size_t) override { return value(Json::array(), true); }
  bool end_object() override { return end(); }
  bool end_array() override { return end(); }

  bool key(string_t& k) override {
    if (at_ == At::kObject)
      member_key_ = std::move(k);
    else if (at_ == At::kFlat)
      flat_key_ = std::move(k);
    else
      built_.key(std::move(k));
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw JsonProblem{JsonProblem::Kind::kInvalid, e.what(), {}, false};  // check_json passed: not expected
  }

  std::optional<Json> top() { return top_is_object_ ? std::nullopt : std::optional<Json>(std::move(built_.root())); }

 private:
  // Between values: kStart (before the top-level one), kObject (between the top-level object's
  // members), kFlat (between the flat member's members), kDone. Inside the value being built:
  // kTop, kMember, kFlatMember.
  enum class At { kStart, kObject, kFlat, kDone, kTop, kMember, kFlatMember };

  bool value(Json&& v, bool container) {
    const bool object = container && v.is_object();
    if (at_ == At::kStart && object) {  // the top-level object: its members are the values
      top_is_object_ = true;
      at_ = At::kObject;
      return true;
    }
    if (at_ == At::kObject && object && !sink_.flat_key.empty() && member_key_ == sink_.flat_key) {
      at_ = At::kFlat;  // its members are the values
      if (sink_.flat_begin) sink_.flat_begin();
      return true;
    }
    if (at_ == At::kStart || at_ == At::kObject || at_ == At::kFlat) {  // a value starts
      built_.reset();
      at_ = at_ == At::kStart ? At::kTop : at_ == At::kObject ? At::kMember : At::kFlatMember;
    }
    if (built_.value(std::move(v), container)) deliver();
    return true;
  }

  bool end() {
    if (at_ == At::kObject) {  // the top-level object closes
      at_ = At::kDone;
    } else if (at_ == At::kFlat) {  // the flat member's object closes
      Json empty = Json::object();
      at_ = At::kObject;
      sink_.member(member_key_, empty, false);
    } else if (built_.close()) {
      deliver();
    }
    return true;
  }

  // The value built is complete: hand it over (the top-level one is kept for top()).
  void deliver() {
    if (at_ == At::kTop) {
      at_ = At::kDone;
    } else if (at_ == At::kMember) {
      at_ = At::kObject;
      sink_.member(member_key_, built_.root(), built_.truncated());
    } else {
      at_ = At::kFlat;
      sink_.flat_member(flat_key_, built_.root(), built_.truncated());
    }
  }

  const JsonMembers& sink_;
  At at_ = At::kStart;
  bool top_is_object_ = false;
  std::string member_key_, flat_key_;
  Builder built_;  // the value being built (one at a time)
};

}  // namespace

std::string json_text_problem(std::string_view text) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    return "NUL byte at offset " + std::to_string(nul);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") return "it starts with a byte order mark";
  return {};
}

bool check_json(std::string_view text, bool unique_keys) {
  if (std::string problem = json_text_problem(text); !problem.empty())
    throw JsonProblem{JsonProblem::Kind::kInvalid, std::move(problem), {}, false};
  Scanner scanner(unique_keys);
  nlohmann::json::sax_parse(text.begin(), text.end(), &scanner, nlohmann::json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/false);
  return scanner.top_is_object();
}

std::optional<nlohmann::json> parse_json_members(std::string_view text, bool unique_keys, const JsonMembers& sink) {
  check_json(text, unique_keys);
  MemberParser parser(sink);
  nlohmann::json::sax_parse(text.begin(), text.end(), &parser, nlohmann::json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/false);
  return parser.top();
}

}  // namespace wpack::detail
