// File helpers shared by the readers and writers: a read-only memory map and an output file that
// appears at its target path only when complete (temp file beside it, fsync, rename).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace wpack {

// A read-only memory map of a whole file. The file is opened O_RDONLY and never modified.
class MappedFile {
 public:
  // Throws Error(kIo) naming the path when it cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// Writes to `<target>.wpack-tmp-XXXXXX` in the target's directory; commit() flushes, fsyncs and
// renames it onto the target. Destroyed without commit(), it removes the temp file, so the target
// path never holds a partial file. Without `overwrite`, an existing target is an Error(kExists).
class AtomicOutputFile {
 public:
  AtomicOutputFile(const std::string& target, bool overwrite);
  ~AtomicOutputFile();
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;

  // Appends `size` bytes. Throws Error(kIo) naming the target on a write error (disk full, ...).
  void write(const void* data, uint64_t size);
  // Appends zero bytes until position() is a multiple of `alignment`.
  void pad_to(uint64_t alignment);
  uint64_t position() const { return position_; }
  // Overwrites already written bytes at `offset` (used to patch fixed-size headers).
  void write_at(uint64_t offset, const void* data, uint64_t size);
  void commit();
  const std::string& target() const { return target_; }

 private:
  std::string target_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t position_ = 0;
  bool overwrite_ = false;
  bool committed_ = false;
};

// True when `path` exists (any file type).
bool path_exists(const std::string& path);

}  // namespace wpack
