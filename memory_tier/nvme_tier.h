// File: memory_tier/nvme_tier.h
//
// The cold tier: one table version's row file read with O_DIRECT through a pool of IoReaders
// (io_reader.h; io_uring or pread). A Lookup turns row ids into pages by arithmetic
// (row_file.h), reads each distinct page once (page dedup within the batch), merges runs of
// adjacent pages into one read up to max_read_bytes, keeps `depth` reads in flight and copies each
// row out of its page as the page arrives. It holds every row, so it never reports a miss.
#ifndef ENGRAM_MEMORY_TIER_NVME_TIER_H_
#define ENGRAM_MEMORY_TIER_NVME_TIER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "memory_tier/io_reader.h"
#include "memory_tier/posix_file.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier.h"

namespace engram {

class NvmeTier : public Tier {
 public:
  struct Options {
    IoReaderOptions io;
    // Open with O_DIRECT (bypassing the page cache, which would otherwise be a second, unmanaged
    // DRAM tier). Falls back to buffered reads when the file system refuses O_DIRECT (tmpfs).
    bool direct_io = true;
    // Readers (rings) at most, i.e. concurrent lookups reading this table. Default 4.
    int max_readers = 4;
  };

  // Opens the row file of `manifest` (checking its header and size, not the chunks).
  static absl::StatusOr<std::unique_ptr<NvmeTier>> Open(const Manifest& manifest,
                                                        const std::string& path,
                                                        const Options& options);
  ~NvmeTier() override;

  absl::string_view name() const override { return "nvme"; }
  size_t row_bytes() const override { return layout_.row_bytes; }
  absl::Status Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                      std::vector<uint32_t>* missing) override;

  // The backend actually in use (pread after a fallback).
  IoBackend backend() const { return backend_; }
  bool direct_io() const { return direct_; }
  const IoCounters& counters() const { return counters_; }

 private:
  NvmeTier() = default;
  absl::StatusOr<std::unique_ptr<IoReader>> Acquire();
  void Release(std::unique_ptr<IoReader> reader);
  // Destroys a reader that failed (its ring may be unusable) and frees its place in the pool.
  void Discard(std::unique_ptr<IoReader> reader);

  std::string path_;
  RowLayout layout_;
  Options options_;
  ScopedFd fd_;
  bool direct_ = false;
  IoBackend backend_ = IoBackend::kPread;
  IoCounters counters_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<IoReader>> idle_ ABSL_GUARDED_BY(mu_);
  int readers_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_NVME_TIER_H_
