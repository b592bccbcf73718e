// File helpers shared by the readers and writers: a read-only memory map and an output file that
// appears at its target path only when complete (unnamed temp file, fsync, link/rename).
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

  // A hint that bytes [offset, offset + size) are not needed soon: their pages (rounded outwards to
  // whole pages) leave this process's resident set (madvise MADV_DONTNEED). The contents do not
  // change: the next access reads them again from the file (usually from the page cache). Lets a
  // caller that streams through a large file keep its resident memory at what it is working on.
  void release(uint64_t offset, uint64_t size) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// An output file that appears at its target path only when complete.
//
// The bytes go to an unnamed file in the target's directory (O_TMPFILE), which the kernel removes
// when the process ends in any way, kill -9 included. commit() fsyncs it and gives it its name:
// without `overwrite` by linking it to the target, which fails if the target exists (no race);
// with `overwrite` by linking it to `.<name>.wpack-tmp-XXXXXX` and renaming that onto the target,
// so that a reader sees the old file or the new one, never a mix. Then the directory is fsynced.
// Where O_TMPFILE is not available (some filesystems, no /proc), the file is created as
// `.<name>.wpack-tmp-XXXXXX` from the start; a process killed before commit() then leaves that
// hidden temp file behind (any exit through an exception or a return removes it).
//
// The file's mode is the replaced target's (permission bits), else 0666 less the umask.
//
// Zero bytes are not written where a whole aligned 4 KiB block of the file would be zero: the file
// gets a hole there (reads as zeros, takes no disk space). Error(kIo) names the target on any
// failure (disk full, file size limit: the caller ignores SIGXFSZ, as the wpack CLI does; I/O
// error), and the destructor of an uncommitted file
// removes it. Without `overwrite`, an existing target is an Error(kExists); with it, an existing
// target that is neither a regular file nor a symbolic link (a device, FIFO, socket, directory) is
// an Error(kIo), checked when the file is created, before anything is written; so is, as
// kInvalidArgument, an empty target path.
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
  // True when the file is an unnamed O_TMPFILE until commit() (nothing is left behind by a kill).
  bool unnamed_until_commit() const { return unnamed_; }

 private:
  void write_data_at(uint64_t offset, const uint8_t* data, uint64_t size);
  void give_name();  // commit() of an unnamed file: link into place

  std::string target_;
  std::string dir_;
  std::string temp_path_;  // the named temp file (fallback), empty for an unnamed file
  int fd_ = -1;
  uint64_t position_ = 0;
  bool unnamed_ = false;
  bool overwrite_ = false;
  bool committed_ = false;
};

// True when `path` exists (any file type).
bool path_exists(const std::string& path);

}  // namespace wpack
