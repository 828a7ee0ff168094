// File: memory_tier/io_reader.h
//
// Batched reads of aligned file regions for the cold tier, modelled on RocksDB's
// PosixRandomAccessFile::MultiRead: an io_uring backend (registered file and buffers, up to `depth`
// reads in flight, one submission per wave) and a pread backend with the same behaviour, used when
// io_uring cannot be set up (old kernel, seccomp in a container) or when configured.
//
// ERROR HANDLING. Every read has its own outcome. -EAGAIN and -EINTR resubmit the read unchanged.
// A failed read (-EIO, ...) ends the batch with that error, naming the file and offset; reads
// already in flight are drained first so no buffer is in use when ReadRuns returns.
// PARTIAL READS. A short read keeps the bytes up to the last 4 KiB boundary (O_DIRECT needs
// aligned offsets) and resubmits the rest; 0 bytes means the file ended early (a truncated row
// file) and is an error. Each read may be resubmitted at most kMaxResubmissions times.
// TEST SEAM. IoReaderOptions::fault_hook sees each completion's result before it is acted on and
// may replace it (a shorter count, -EAGAIN, -EIO): tests exercise the paths above on real I/O.
// THREAD SAFETY. An IoReader is used by one thread at a time (it owns a ring and its buffers);
// NvmeTier keeps a pool of them.
#ifndef ENGRAM_MEMORY_TIER_IO_READER_H_
#define ENGRAM_MEMORY_TIER_IO_READER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

enum class IoBackend { kUring, kPread };
// "uring" / "pread".
absl::string_view IoBackendName(IoBackend backend);
absl::StatusOr<IoBackend> ParseIoBackend(absl::string_view name);

inline constexpr int kMaxResubmissions = 64;
inline constexpr uint32_t kIoAlignment = 4096;

// One contiguous region of the file: offset and length multiples of 4096.
struct ReadRun {
  uint64_t offset = 0;
  uint32_t length = 0;
};

// Replaces a completion's result (bytes read or -errno); see TEST SEAM above.
using IoFaultHook = std::function<int(int result)>;

// Counters of a tier's readers (shared by all of them).
struct IoCounters {
  std::atomic<uint64_t> reads{0};        // reads submitted (resubmissions included)
  std::atomic<uint64_t> bytes{0};        // bytes read
  std::atomic<uint64_t> short_reads{0};  // resubmitted after a short read
  std::atomic<uint64_t> retries{0};      // resubmitted after EAGAIN/EINTR
  std::atomic<int64_t> in_flight{0};     // reads in flight now (the queue depth gauge)
  // Readers created with pread because io_uring was asked for and unavailable.
  std::atomic<int64_t> uring_fallbacks{0};
};

struct IoReaderOptions {
  IoBackend backend = IoBackend::kUring;
  // Reads in flight per reader. Default 64.
  int depth = 64;
  // Largest run; each uring reader holds 2 * depth * max_read_bytes of buffers (the next wave is
  // in flight while the caller works on the last one). Default 32 KiB.
  uint32_t max_read_bytes = 32768;
  // Register the buffers and the file with the ring (best effort: registration can fail for
  // non-root users past RLIMIT_MEMLOCK; reads then use plain buffers).
  bool register_buffers = true;
  bool register_files = true;
  IoFaultHook fault_hook;
};

class IoReader {
 public:
  // A reader on `fd` (which stays owned by the caller). With backend kUring, falls back to pread
  // when io_uring_queue_init fails, logging why once per process.
  static absl::StatusOr<std::unique_ptr<IoReader>> Create(int fd, const std::string& path,
                                                          const IoReaderOptions& options,
                                                          IoCounters* counters);
  virtual ~IoReader() = default;

  virtual IoBackend backend() const = 0;
  // Reads every run (each at most max_read_bytes) and calls on_done(run index, data) once per
  // run as it completes, in any order; `data` is valid only during the call. After an error the
  // reader may hold reads it could not drain (a failed ring): destroy it rather than reuse it.
  virtual absl::Status ReadRuns(absl::Span<const ReadRun> runs,
                                const std::function<void(size_t, const uint8_t*)>& on_done) = 0;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_IO_READER_H_
