// File: memory_tier/nvme_tier.h
//
// The cold tier: one table version's row file read with O_DIRECT through a pool of IoReaders
// (io_reader.h; io_uring or pread). A Lookup turns row ids into pages by arithmetic
// (row_file.h), reads each distinct page once (page dedup within the batch), merges runs of
// adjacent pages into one read up to max_read_bytes, keeps `depth` reads in flight and copies each
// row out of its page as the page arrives. It holds every row, so it never reports a miss.
//
// Every page read is checked against its page checksum (row_file.h; the checksums are read and
// verified at open, 4 bytes per page in memory) before any of its rows is copied out. A page that
// fails fails the batch with DATA_LOSS naming the file, page and rows, and is reported to the
// CorruptionObserver; the other batches go on. The scrub reads pages through ScrubPages.
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

// Where a bad page was found (the label of engram_row_pages_corrupt_total).
enum class CorruptionSource { kLoad = 0, kRead = 1, kScrub = 2 };
inline constexpr int kNumCorruptionSources = 3;
// "load" / "read" / "scrub".
absl::string_view CorruptionSourceName(CorruptionSource source);

// Told of every page whose checksum fails, from lookup threads and the scrub; the same page may
// be reported again by a later read. Must be cheap and must not block on I/O.
class CorruptionObserver {
 public:
  virtual ~CorruptionObserver() = default;
  // `error` is the DATA_LOSS naming file, page, rows and byte range.
  virtual void OnCorruptPage(uint64_t page, CorruptionSource source,
                             const absl::Status& error) = 0;
};

class NvmeTier : public Tier {
 public:
  struct Options {
    IoReaderOptions io;
    // Open with O_DIRECT (bypassing the page cache, which would otherwise be a second, unmanaged
    // DRAM tier). Falls back to buffered reads when the file system refuses O_DIRECT (tmpfs).
    bool direct_io = true;
    // Readers (rings) at most, i.e. concurrent lookups reading this table. Default 4.
    int max_readers = 4;
    // Told of bad pages (not owned; may be null).
    CorruptionObserver* corruption = nullptr;
  };

  // Opens the row file of `manifest`: checks its header and size (not the chunks), and reads and
  // checks its page checksums. FAILED_PRECONDITION for a format 1 file (no page checksums), naming
  // the file and the fix.
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
  const RowLayout& layout() const { return layout_; }

  // Reads data pages [first, first + count) (count <= kMaxScrubPages) with one plain read, off
  // the reader pool and its counters, and checks each against its checksum; bad pages are reported
  // (CorruptionSource::kScrub) and counted in *bad. An I/O error is returned as is.
  static constexpr uint32_t kMaxScrubPages = 64;
  absl::Status ScrubPages(uint64_t first, uint32_t count, uint64_t* bad);

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
  std::vector<uint32_t> page_crcs_;  // PageChecksum of every data page, verified at open
  absl::Mutex scrub_mu_;
  std::unique_ptr<uint8_t, void (*)(void*)> scrub_buffer_{nullptr, nullptr};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<IoReader>> idle_ ABSL_GUARDED_BY(mu_);
  int readers_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_NVME_TIER_H_
