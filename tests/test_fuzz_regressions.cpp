// Fuzz regressions: every input under fuzz/corpus/<surface>/ (the seeds, and each crash the fuzzers
// found, kept as crash-*) is replayed through its harness (fuzz/harness.h) in the ordinary suite,
// so the inputs stay fixed on every compiler and in the WPACK_SANITIZE build, not only in
// fuzz/run.sh. Below the replay, one test per crash states what the library must do with it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz/harness.h"
#include "test_util.h"

using namespace wpack;

namespace {

const std::filesystem::path kCorpus = std::filesystem::path(WPACK_SOURCE_DIR) / "fuzz" / "corpus";

std::vector<std::filesystem::path> corpus_files(const std::string& surface) {
  std::vector<std::filesystem::path> files;
  const auto dir = kCorpus / surface;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("fuzz corpus: every seed and crash input replays cleanly through its harness") {
  for (const fuzz::Target& target : fuzz::all_targets()) {
    DYNAMIC_SECTION(target.name) {
      const auto files = corpus_files(target.name);
      // Each surface has seeds (fuzz/make_corpus.cpp); an empty folder would make this test vacuous.
      REQUIRE(!files.empty());
      for (const auto& file : files) {
        INFO(file.string());
        const std::vector<uint8_t> bytes = test::read_file(file.string());
        // A harness aborts on a failed check; here any escaping exception is a failure too.
        REQUIRE_NOTHROW(target.run(bytes));
      }
    }
  }
}
