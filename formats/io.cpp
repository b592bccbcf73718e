#include "formats/io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "formats/error.h"

namespace wpack {
namespace {

std::string errno_text() { return std::strerror(errno); }

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

AtomicOutputFile::AtomicOutputFile(const std::string& target, bool overwrite)
    : target_(target), overwrite_(overwrite) {
  if (!overwrite && path_exists(target))
    throw Error(ErrorCode::kExists, target + ": already exists (use -f to overwrite)");
  std::filesystem::path t(target);
  std::string dir = t.parent_path().empty() ? "." : t.parent_path().string();
  std::string pattern = dir + "/." + t.filename().string() + ".wpack-tmp-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) throw Error(ErrorCode::kIo, target + ": cannot create temporary file in " + dir + ": " + errno_text());
  temp_path_ = buf.data();
  ::fchmod(fd_, 0644);
}

AtomicOutputFile::~AtomicOutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicOutputFile::write(const void* data, uint64_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left > (1u << 30) ? (1u << 30) : left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::kIo, target_ + ": write failed: " + errno_text());
    }
    p += n;
    left -= static_cast<uint64_t>(n);
  }
  position_ += size;
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
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::kIo, target_ + ": write failed: " + errno_text());
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<uint64_t>(n);
  }
}

void AtomicOutputFile::commit() {
  if (::fsync(fd_) != 0) throw Error(ErrorCode::kIo, target_ + ": fsync failed: " + errno_text());
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(ErrorCode::kIo, target_ + ": close failed: " + errno_text());
  }
  fd_ = -1;
  if (!overwrite_ && path_exists(target_))
    throw Error(ErrorCode::kExists, target_ + ": already exists (use -f to overwrite)");
  if (::rename(temp_path_.c_str(), target_.c_str()) != 0)
    throw Error(ErrorCode::kIo, target_ + ": cannot rename temporary file into place: " + errno_text());
  committed_ = true;
  // Make the rename itself durable.
  std::filesystem::path t(target_);
  std::string dir = t.parent_path().empty() ? "." : t.parent_path().string();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace wpack
