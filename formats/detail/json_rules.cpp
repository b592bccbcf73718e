#include "formats/detail/json_rules.h"

#include <set>

namespace wpack::detail {
namespace {

// The SAX pass of parse_json: nesting, duplicate keys, key order. Values are not kept.
class Scanner final : public nlohmann::json_sax<nlohmann::json> {
 public:
  Scanner(bool unique_keys, std::string_view keys_of, ParsedJson& out)
      : unique_keys_(unique_keys), keys_of_(keys_of), out_(out) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }

  bool start_object(std::size_t) override { return open(true); }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_array() override { return close(); }

  bool key(string_t& key) override {
    Level& level = levels_.back();
    if (unique_keys_ && !level.keys.insert(key).second)
      throw JsonProblem{JsonProblem::Kind::kDuplicateKey, "has duplicate key", key, levels_.size() == 1};
    if (levels_.size() == 1) {
      out_.top_keys.push_back(key);
      in_keys_of_ = !keys_of_.empty() && key == keys_of_;
    } else if (levels_.size() == 2 && in_keys_of_) {
      out_.member_keys.push_back(key);
    }
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw JsonProblem{JsonProblem::Kind::kInvalid, e.what(), {}, false};
  }

 private:
  struct Level {
    bool object;
    std::set<std::string> keys;  // with unique_keys_: the keys seen so far
  };

  bool open(bool object) {
    if (levels_.size() >= static_cast<size_t>(kMaxJsonDepth))
      throw JsonProblem{JsonProblem::Kind::kTooDeep,
                        "nests arrays and objects deeper than " + std::to_string(kMaxJsonDepth) + " levels",
                        {},
                        false};
    levels_.push_back({object, {}});
    return true;
  }
  bool close() {
    levels_.pop_back();
    return true;
  }

  bool unique_keys_;
  std::string_view keys_of_;
  ParsedJson& out_;
  std::vector<Level> levels_;
  bool in_keys_of_ = false;  // the top-level member being read is keys_of_
};

}  // namespace

std::string json_text_problem(std::string_view text) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    return "NUL byte at offset " + std::to_string(nul);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") return "it starts with a byte order mark";
  return {};
}

ParsedJson parse_json(std::string_view text, bool unique_keys, std::string_view keys_of) {
  if (std::string problem = json_text_problem(text); !problem.empty())
    throw JsonProblem{JsonProblem::Kind::kInvalid, std::move(problem), {}, false};
  ParsedJson out;
  Scanner scanner(unique_keys, keys_of, out);
  nlohmann::json::sax_parse(text.begin(), text.end(), &scanner, nlohmann::json::input_format_t::json,
                            /*strict=*/true, /*ignore_comments=*/false);
  try {
    out.value = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/true,
                                      /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {  // the scan passed: not expected
    throw JsonProblem{JsonProblem::Kind::kInvalid, e.what(), {}, false};
  }
  return out;
}

}  // namespace wpack::detail
