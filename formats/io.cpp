#include "formats/io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include "formats/error.h"

namespace wpack {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is refused below as not a
  // regular file (the flag does not change how a regular file maps).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(ErrorCode::kIo, path + ": cannot open: " + errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string e = errno_text();
    ::close(fd);
    throw Error(ErrorCode::kIo, path + ": cannot stat: " + e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::kIo, path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string e = errno_text();
      ::close(fd);
      throw Error(ErrorCode::kIo, path + ": cannot map: " + e);
    }
    file->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release(uint64_t offset, uint64_t size) const {
  if (data_ == nullptr || size == 0 || offset >= size_) return;
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t end = std::min(size_, offset + std::min(size, size_ - offset));
  const uint64_t first = offset / page * page;
  const uint64_t last = std::min((end + page - 1) / page * page, (size_ + page - 1) / page * page);
  // Only a hint: the mapping is read-only and private, so the pages come back from the file.
  ::madvise(const_cast<uint8_t*>(data_) + first, last - first, MADV_DONTNEED);
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

namespace {

constexpr uint64_t kHoleBlock = 4096;  // zero blocks of this size, at file offsets that are multiples of it, become holes

bool all_zero(const uint8_t* p, uint64_t n) {
  // Word at a time; most blocks of real data fail on the first word.
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

// "dir/.name.wpack-tmp-" for `target`, the start of its temporary names: the name cut to its first
// 96 bytes, so that the temporary name of a target with a name of up to NAME_MAX (255) bytes stays
// within NAME_MAX too (a name of 230 bytes failed to link, after all the work, under -f).
std::string temp_prefix(const std::string& dir, const std::string& target) {
  return dir + "/." + std::filesystem::path(target).filename().string().substr(0, 96) + ".wpack-tmp-";
}

}  // namespace

AtomicOutputFile::AtomicOutputFile(const std::string& target, bool overwrite)
    : target_(target), overwrite_(overwrite) {
  if (target.empty()) throw Error(ErrorCode::kInvalidArgument, "the output path is empty");
  struct stat st;
  if (::lstat(target.c_str(), &st) == 0) {
    if (!overwrite) throw Error(ErrorCode::kExists, target + ": already exists (use -f to overwrite)");
    // -f replaces a file (or a symbolic link, not what it points to), never a device, FIFO, socket
    // or directory: `-o /dev/null -f` would otherwise put a regular file in its place.
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
      throw Error(ErrorCode::kIo, target + ": not a regular file (-f replaces regular files only)");
  }
  // The new file's mode: the replaced file's, as sed -i keeps it; else 0666 less the umask, as any
  // new file's (umask can only be read by setting it: set back at once).
  mode_t mode = 0;
  if (::stat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    mode = st.st_mode & 0777;
  } else {
    const mode_t umask_now = ::umask(0);
    ::umask(umask_now);
    mode = 0666 & ~umask_now;
  }
  std::filesystem::path t(target);
  dir_ = t.parent_path().empty() ? "." : t.parent_path().string();
  // An unnamed file needs /proc to be linked into place later (linkat of /proc/self/fd/N).
  if (::access("/proc/self/fd", X_OK) == 0) {
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd_ >= 0) {
      unnamed_ = true;
      ::fchmod(fd_, mode);
      return;
    }
  }
  // Fallback (the filesystem does not support O_TMPFILE): a hidden named temp file.
  const std::string pattern = temp_prefix(dir_, target) + "XXXXXX";  // mkstemp
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) throw Error(ErrorCode::kIo, target + ": cannot create temporary file in " + dir_ + ": " + errno_text());
  temp_path_ = buf.data();
  ::fchmod(fd_, mode);
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);  // an unnamed file disappears with its last descriptor
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicOutputFile::write_data_at(uint64_t offset, const uint8_t* p, uint64_t size) {
  while (size > 0) {
    const size_t chunk = size > (1u << 30) ? (1u << 30) : static_cast<size_t>(size);
    ssize_t n = ::pwrite(fd_, p, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::kIo, target_ + ": write failed: " + errno_text());
    }
    if (n == 0) throw Error(ErrorCode::kIo, target_ + ": write failed: no progress");
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<uint64_t>(n);
  }
}

void AtomicOutputFile::write(const void* data, uint64_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t pos = position_;
  const uint64_t end = position_ + size;
  // The bytes are cut at the file's 4 KiB block boundaries; a piece that is all zero is not written
  // (the file reads zeros there), so that a block left all zero by any sequence of calls stays a
  // hole; runs of the other pieces are written with one call each.
  uint64_t run_start = pos;
  while (pos < end) {
    const uint64_t next = std::min(end, (pos / kHoleBlock + 1) * kHoleBlock);
    if (all_zero(p + (pos - position_), next - pos)) {
      write_data_at(run_start, p + (run_start - position_), pos - run_start);
      run_start = next;
    }
    pos = next;
  }
  write_data_at(run_start, p + (run_start - position_), end - run_start);
  position_ = end;
}

void AtomicOutputFile::pad_to(uint64_t alignment) {
  static const uint8_t zeros[4096] = {};
  if (alignment == 0) return;
  uint64_t pad = (alignment - position_ % alignment) % alignment;
  while (pad > 0) {
    uint64_t n = pad < sizeof(zeros) ? pad : sizeof(zeros);
    write(zeros, n);
    pad -= n;
  }
}

void AtomicOutputFile::write_at(uint64_t offset, const void* data, uint64_t size) {
  if (offset > position_ || size > position_ - offset)
    throw Error(ErrorCode::kInvalidArgument, target_ + ": write_at past the bytes written so far");
  write_data_at(offset, static_cast<const uint8_t*>(data), size);
}

void AtomicOutputFile::give_name() {
  const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
  if (!overwrite_) {
    // linkat refuses an existing target: no window in which another file could be replaced.
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, target_.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      if (errno == EEXIST) throw Error(ErrorCode::kExists, target_ + ": already exists (use -f to overwrite)");
      throw Error(ErrorCode::kIo, target_ + ": cannot link the output into place: " + errno_text());
    }
    return;
  }
  // Overwrite: a temporary name, then rename() replaces the target atomically. linkat fails on a
  // name that exists, so a made-up unique name needs no further care.
  static std::atomic<uint64_t> counter{0};
  const std::string base = temp_prefix(dir_, target_);
  for (int attempt = 0;; ++attempt) {
    const uint64_t stamp = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    const std::string name = base + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
                             std::to_string(stamp % 1000000007u);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      temp_path_ = name;
      break;
    }
    if (errno != EEXIST || attempt > 100)
      throw Error(ErrorCode::kIo, target_ + ": cannot link the output into " + dir_ + ": " + errno_text());
  }
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0) {
    const std::string e = errno_text();
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
    throw Error(ErrorCode::kIo, target_ + ": cannot rename temporary file into place: " + e);
  }
  temp_path_.clear();
}

void AtomicOutputFile::commit() {
  if (fd_ < 0) throw Error(ErrorCode::kInvalidArgument, target_ + ": commit() after a failed commit()");
  // A trailing hole: give the file its full length.
  struct stat st;
  if (::fstat(fd_, &st) != 0) throw Error(ErrorCode::kIo, target_ + ": cannot stat output: " + errno_text());
  if (static_cast<uint64_t>(st.st_size) != position_ && ::ftruncate(fd_, static_cast<off_t>(position_)) != 0)
    throw Error(ErrorCode::kIo, target_ + ": write failed: " + errno_text());
  if (::fsync(fd_) != 0) throw Error(ErrorCode::kIo, target_ + ": fsync failed: " + errno_text());
  if (unnamed_) {
    give_name();  // before close: the link goes through the descriptor
    committed_ = true;
    const int fd = fd_;
    fd_ = -1;
    ::close(fd);  // data and metadata are already fsynced
  } else {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(ErrorCode::kIo, target_ + ": close failed: " + errno_text());
    if (!overwrite_ && path_exists(target_))
      throw Error(ErrorCode::kExists, target_ + ": already exists (use -f to overwrite)");
    if (::rename(temp_path_.c_str(), target_.c_str()) != 0)
      throw Error(ErrorCode::kIo, target_ + ": cannot rename temporary file into place: " + errno_text());
    committed_ = true;
  }
  // Make the new name itself durable.
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace wpack
