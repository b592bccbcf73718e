// Nothing lost (issue 6, item 4): the real wpack binary, killed with SIGKILL at several moments of
// `compress` and `unpack` of a ~200 MB model, leaves no file at the target path (or, with -f, the
// old file untouched) and no temporary file, and never changes its input; a write error (file size
// limit, as a full disk would give) is reported in one line, exit 1, and the partial output is
// removed; an input that is read-only on disk is packed as usual.
//
// The kill moments are set by the output's progress: the test watches the size of the file the
// child writes (its descriptor in /proc/<pid>/fd) and kills it once 0%, 10%, 50%, 90% and 100% of
// the final size is written (100%: during fsync and link, or just after the process finished); with
// -f over an existing target at 50% and 100%.
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "formats/io.h"
#include "formats/safetensors.h"
#include "formats/wpk.h"
#include "test_util.h"

using namespace wpack;
using wpack::test::TempDir;

namespace {

// XXH3 of a whole file (through a read-only map), and its size: "unchanged" means both are equal.
struct FileHash {
  uint64_t size = 0, hash = 0;
  bool operator==(const FileHash&) const = default;
};
FileHash hash_file(const std::string& path) {
  auto map = MappedFile::open(path);
  return {map->size(), wpk_checksum({map->data(), static_cast<size_t>(map->size())})};
}

// A ~200 MB BF16 model with weight-like values (a table of gaussian values indexed at random), so
// that packing takes a moment.
void write_big_model(const std::string& path) {
  const auto table = test::gaussian_bf16(65536, 0.02f, 7);
  const uint64_t rows = 5504, cols = 18432;
  std::vector<TensorInfo> infos = {{"big.weight", DType::BF16, {rows, cols}}, {"big.bias", DType::F32, {cols}}};
  SafetensorsWriter writer(path, infos, {{"format", "pt"}}, false);
  std::vector<uint8_t> chunk(2 * cols * 64);
  uint64_t state = 12345;
  for (uint64_t r = 0; r < rows; r += 64) {
    for (uint64_t i = 0; i < chunk.size() / 2; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      std::memcpy(chunk.data() + 2 * i, table.data() + 2 * (state >> 48), 2);
    }
    writer.append(chunk);
  }
  writer.append(test::gaussian_f32(cols, 0.1f, 8));
  writer.commit();
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Starts the wpack binary with `args`, stdin from /dev/null. stdout and stderr go to /dev/null, or
// with `capture` into a pipe whose read end is returned there (read it after the child ended).
// With `file_size_limit`, the child runs under RLIMIT_FSIZE with SIGXFSZ ignored, so that a write
// past the limit fails with EFBIG, as a full disk fails with ENOSPC.
pid_t spawn_wpack(const std::vector<std::string>& args, int* capture = nullptr, rlim_t file_size_limit = RLIM_INFINITY) {
  std::vector<std::string> argv_text = {WPACK_BINARY};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pipe_fds[2] = {-1, -1};
  if (capture) REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int out = capture ? pipe_fds[1] : ::open("/dev/null", O_WRONLY);
    const int null_in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || null_in < 0) ::_exit(126);
    ::dup2(null_in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (file_size_limit != RLIM_INFINITY) {
      ::signal(SIGXFSZ, SIG_DFL);  // as a shell leaves it (fatal): wpack ignores it itself
      struct rlimit limit = {file_size_limit, file_size_limit};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(126);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (capture) {
    ::close(pipe_fds[1]);
    *capture = pipe_fds[0];
  }
  return pid;
}

std::string read_all(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return text;
}

struct Exit {
  bool killed = false;  // by our SIGKILL
  int code = -1;        // exit code when not killed
};
Exit exit_of(int status) {
  Exit e;
  e.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (WIFEXITED(status)) e.code = WEXITSTATUS(status);
  return e;
}
Exit wait_for(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return exit_of(status);
}

// Size of the output file the child is writing in `dir` (its unnamed O_TMPFILE "dir/#ino (deleted)",
// or a named temp file), or -1 when it has none open.
int64_t output_size(pid_t pid, const std::string& dir) {
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(fd_dir, ec)) {
    char link[4096];
    const ssize_t n = ::readlink(e.path().c_str(), link, sizeof link - 1);
    if (n <= 0) continue;
    const std::string target(link, static_cast<size_t>(n));
    if (target.rfind(dir + "/", 0) != 0) continue;
    struct stat st;
    if (::stat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IWUSR)) {
      // Inputs are mapped and closed; an open regular file in the directory is the output.
      return st.st_size;
    }
  }
  return -1;
}

// Runs `args` and kills the process with SIGKILL once its output reaches `fraction` of
// `final_size` bytes (fraction 0: as soon as it runs). Returns how it ended.
Exit run_and_kill(const std::vector<std::string>& args, const std::string& dir, double fraction, uint64_t final_size) {
  const pid_t pid = spawn_wpack(args);
  const auto threshold = static_cast<int64_t>(fraction * double(final_size));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (fraction > 0 && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return exit_of(status);  // finished before the moment came
    if (output_size(pid, dir) >= threshold) break;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  ::kill(pid, SIGKILL);
  return wait_for(pid);
}

// Temp files the documented fallback may leave after a kill: ".<target name>.wpack-tmp-*".
bool is_documented_temp(const std::string& name, const std::string& target_name) {
  return name.rfind("." + target_name + ".wpack-tmp-", 0) == 0;
}

}  // namespace

TEST_CASE("crash safety: SIGKILL during compress and unpack leaves no partial file, inputs never change") {
  TempDir dir;
  const std::string work = dir.file("work");
  std::filesystem::create_directories(work);
  const std::string model = work + "/model.safetensors";
  write_big_model(model);
  ::chmod(model.c_str(), 0444);  // inputs are opened read-only: a read-only file is no obstacle
  const FileHash model_hash = hash_file(model);
  {
    AtomicOutputFile probe(work + "/probe", false);
    INFO("O_TMPFILE is not available in " << work << ": a kill may leave the documented hidden temp file");
    CHECK(probe.unnamed_until_commit());
  }

  // Complete runs give the reference outputs (the same bytes every run: the kills below are
  // compared against them).
  const std::string packed = work + "/model.wpk";
  const std::vector<std::string> compress_args = {"compress", model, "-o", packed, "-q", "-T", "1", "--codec", "rans"};
  {
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(wait_for(spawn_wpack(compress_args)).code == 0);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    WARN("compress of " << model_hash.size / 1000000 << " MB took " << seconds << " s");
  }
  const FileHash packed_hash = hash_file(packed);
  const std::string unpacked = work + "/unpacked.safetensors";
  const std::vector<std::string> unpack_args = {"unpack", packed, "-o", unpacked, "-q", "-T", "1"};
  REQUIRE(wait_for(spawn_wpack(unpack_args)).code == 0);
  const FileHash unpacked_hash = hash_file(unpacked);
  CHECK(unpacked_hash == model_hash);  // lossless: the same file back
  std::filesystem::remove(unpacked);
  const std::string kept = packed + ".kept";  // the reference .wpk, for the unpack runs
  std::filesystem::rename(packed, kept);

  struct Command {
    const char* name;
    std::vector<std::string> args;
    std::string target;
    FileHash complete;  // the target after a complete run
  };
  std::vector<std::string> unpack_from_kept = unpack_args;
  unpack_from_kept[1] = kept;
  const std::vector<Command> commands = {{"compress", compress_args, packed, packed_hash},
                                         {"unpack", unpack_from_kept, unpacked, unpacked_hash}};
  const std::vector<std::uint8_t> old_bytes = {'o', 'l', 'd', '\n'};
  int kills_mid_run = 0;
  for (const Command& c : commands) {
    for (bool force : {false, true}) {
      for (double fraction : force ? std::vector<double>{0.5, 1.0} : std::vector<double>{0.0, 0.1, 0.5, 0.9, 1.0}) {
        INFO(c.name << (force ? " -f" : "") << ", killed at " << fraction * 100 << "% of the output");
        std::vector<std::string> args = c.args;
        if (force) {
          args.push_back("-f");
          test::write_file(c.target, old_bytes);
        }
        const Exit e = run_and_kill(args, work, fraction, c.complete.size);
        kills_mid_run += e.killed && fraction > 0 && fraction < 1;
        if (e.killed) {
          // Nothing new at the target: absent, or (with -f) the old file, byte for byte.
          if (force) {
            CHECK(test::read_file(c.target) == old_bytes);
          } else {
            CHECK(!std::filesystem::exists(c.target));
          }
        } else {
          CHECK(e.code == 0);  // it finished first: the target is the complete output
          CHECK(hash_file(c.target) == c.complete);
        }
        // No temporary file: the unnamed output vanished with the process. (With -f, a kill in
        // the instant between link and rename could leave the documented hidden name; the target
        // is still the old or the new file, as checked above.)
        for (const auto& name : list_dir(work)) {
          INFO("left in the directory: " << name);
          const bool expected = name == "model.safetensors" || name == "model.wpk.kept" ||
                                name == std::filesystem::path(c.target).filename().string();
          CHECK((expected || (force && is_documented_temp(name, std::filesystem::path(c.target).filename().string()))));
        }
        CHECK(hash_file(model) == model_hash);
        CHECK(hash_file(kept) == packed_hash);
        std::filesystem::remove(c.target);
      }
    }
  }
  // Most moments must really have interrupted a run (else this test tests nothing).
  CHECK(kills_mid_run >= 6);
}

TEST_CASE("crash safety: a write error (file size limit, as a full disk) is one line, exit 1, nothing left") {
  TempDir dir;
  const std::string work = dir.file("work");
  std::filesystem::create_directories(work);
  const std::string model = work + "/model.safetensors";
  // 8 MB of incompressible bytes: the output cannot be smaller than the limit below.
  write_safetensors(model, {{"noise", DType::U8, {8u << 20}}}, {test::random_bytes(8u << 20, 3)}, {}, false);
  const FileHash model_hash = hash_file(model);
  const std::string packed = work + "/model.wpk";
  REQUIRE(wait_for(spawn_wpack({"compress", model, "-o", packed, "-q"})).code == 0);
  const FileHash packed_hash = hash_file(packed);

  struct Case {
    const char* name;
    std::vector<std::string> args;
    std::string target;
  };
  const std::vector<Case> cases = {
      {"compress", {"compress", model, "-o", work + "/out.wpk"}, work + "/out.wpk"},
      {"unpack", {"unpack", packed, "-o", work + "/out.safetensors"}, work + "/out.safetensors"},
  };
  for (const Case& c : cases) {
    for (rlim_t limit : {rlim_t(0), rlim_t(100), rlim_t(1) << 20}) {
      INFO(c.name << " with a file size limit of " << limit << " bytes");
      int capture = -1;
      const pid_t pid = spawn_wpack(c.args, &capture, limit);
      const std::string text = read_all(capture);  // until the child closes its end
      const Exit e = wait_for(pid);
      INFO("stderr: " << text);
      CHECK(e.code == 1);
      CHECK(std::count(text.begin(), text.end(), '\n') == 1);
      CHECK(text.rfind("wpack: " + c.target + ": write failed: File too large", 0) == 0);
      CHECK(!std::filesystem::exists(c.target));
      CHECK(list_dir(work) == std::vector<std::string>{"model.safetensors", "model.wpk"});
      CHECK(hash_file(model) == model_hash);
      CHECK(hash_file(packed) == packed_hash);
    }
  }
}
