// File: memory_tier/posix_file.h
//
// Small POSIX file helpers shared by the row-file writer, the importer and the readers: an owning
// file descriptor, errno -> absl::Status with the path in the message, durable atomic writes.
#ifndef ENGRAM_MEMORY_TIER_POSIX_FILE_H_
#define ENGRAM_MEMORY_TIER_POSIX_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace engram {

// Status for a failed system call: "<what> <path>: <strerror(err)>"; the code follows errno
// (ENOENT -> NOT_FOUND, EACCES -> PERMISSION_DENIED, ENOSPC -> RESOURCE_EXHAUSTED, ...).
absl::Status PosixError(absl::string_view what, absl::string_view path, int err);

// An owning file descriptor.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release();
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with the error naming the path.
absl::StatusOr<ScopedFd> OpenFile(const std::string& path, int flags, int mode = 0644);
// Writes all `n` bytes at `offset` (retrying short writes and EINTR).
absl::Status PwriteAll(int fd, const void* data, size_t n, uint64_t offset, absl::string_view path);
// Reads exactly `n` bytes at `offset`; OUT_OF_RANGE naming the offset when the file ends first.
absl::Status PreadAll(int fd, void* data, size_t n, uint64_t offset, absl::string_view path);
// fsync of the directory holding `path`, so a rename in it is durable.
absl::Status FsyncParentDir(const std::string& path);
// Writes `data` to path + ".tmp", fsyncs, renames over `path`, fsyncs the directory.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data);
// Whole file as a string.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_POSIX_FILE_H_
