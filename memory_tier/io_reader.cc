#include "memory_tier/io_reader.h"

#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "memory_tier/posix_file.h"

namespace engram {
namespace {

// Page-aligned anonymous memory for read buffers (O_DIRECT needs aligned buffers).
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t bytes) : size_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~AlignedBuffer() {
    if (data_) munmap(data_, size_);
  }
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// The state of one read in flight (a run, possibly resubmitted).
struct Pending {
  size_t run = 0;
  uint32_t done = 0;  // bytes of the run already read
  int resubmissions = 0;
};

enum class Outcome { kDone, kResubmit, kFailed };

// The shared completion logic of both backends (see ERROR HANDLING / PARTIAL READS).
Outcome OnCompletion(int res, const ReadRun& run, Pending* p, IoCounters* counters,
                     const std::string& path, absl::Status* error) {
  const uint64_t at = run.offset + p->done;
  if (res == -EAGAIN || res == -EINTR) {
    counters->retries.fetch_add(1, std::memory_order_relaxed);
  } else if (res < 0) {
    *error = PosixError(absl::StrCat("read at offset ", at, " of"), path, -res);
    return Outcome::kFailed;
  } else if (res == 0) {
    *error = absl::DataLossError(absl::StrCat(path, ": file ends at offset ", at, ", ",
                                              run.length - p->done,
                                              " more bytes expected (truncated row file?)"));
    return Outcome::kFailed;
  } else {
    counters->bytes.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
    const uint32_t got = p->done + static_cast<uint32_t>(res);
    if (got >= run.length) {
      p->done = run.length;
      return Outcome::kDone;
    }
    counters->short_reads.fetch_add(1, std::memory_order_relaxed);
    p->done = got / kIoAlignment * kIoAlignment;  // keep only whole aligned blocks
  }
  if (++p->resubmissions > kMaxResubmissions) {
    *error = absl::UnavailableError(absl::StrCat(path, ": read at offset ", at,
                                                 " still incomplete after ", kMaxResubmissions,
                                                 " resubmissions (last result ", res, ")"));
    return Outcome::kFailed;
  }
  return Outcome::kResubmit;
}

class PreadReader : public IoReader {
 public:
  PreadReader(int fd, std::string path, const IoReaderOptions& o, IoCounters* counters)
      : fd_(fd),
        path_(std::move(path)),
        options_(o),
        counters_(counters),
        buffer_(o.max_read_bytes) {}

  IoBackend backend() const override { return IoBackend::kPread; }

  absl::Status ReadRuns(absl::Span<const ReadRun> runs,
                        const std::function<void(size_t, const uint8_t*)>& on_done) override {
    if (buffer_.data() == nullptr) return absl::ResourceExhaustedError("no read buffer");
    for (size_t i = 0; i < runs.size(); ++i) {
      Pending p{i, 0, 0};
      counters_->in_flight.fetch_add(1, std::memory_order_relaxed);
      absl::Status error;
      Outcome outcome;
      do {
        counters_->reads.fetch_add(1, std::memory_order_relaxed);
        ssize_t r = ::pread(fd_, buffer_.data() + p.done, runs[i].length - p.done,
                            static_cast<off_t>(runs[i].offset + p.done));
        int res = r < 0 ? -errno : static_cast<int>(r);
        if (options_.fault_hook) res = options_.fault_hook(res);
        outcome = OnCompletion(res, runs[i], &p, counters_, path_, &error);
      } while (outcome == Outcome::kResubmit);
      counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
      if (outcome == Outcome::kFailed) return error;
      on_done(i, buffer_.data());
    }
    return absl::OkStatus();
  }

 private:
  int fd_;
  std::string path_;
  IoReaderOptions options_;
  IoCounters* counters_;
  AlignedBuffer buffer_;
};

class UringReader : public IoReader {
 public:
  ~UringReader() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
    // Reads abandoned with a failed ring no longer count as in flight.
    counters_->in_flight.fetch_sub(in_flight_, std::memory_order_relaxed);
  }

  static absl::StatusOr<std::unique_ptr<UringReader>> Create(int fd, const std::string& path,
                                                             const IoReaderOptions& o,
                                                             IoCounters* counters) {
    auto r = std::unique_ptr<UringReader>(new UringReader(fd, path, o, counters));
    // COOP_TASKRUN: completions are processed when we enter the kernel anyway, no IPI needed.
    int err = io_uring_queue_init(o.depth, &r->ring_, IORING_SETUP_COOP_TASKRUN);
    if (err == -EINVAL) err = io_uring_queue_init(o.depth, &r->ring_, 0);
    if (err < 0) return PosixError("io_uring_queue_init for", path, -err);
    r->ring_ready_ = true;
    if (r->buffers_.data() == nullptr) return absl::ResourceExhaustedError("no read buffers");
    if (o.register_files && io_uring_register_files(&r->ring_, &r->fd_, 1) == 0) {
      r->fixed_file_ = true;
    }
    if (o.register_buffers) {
      iovec iov{r->buffers_.data(), r->buffers_.size()};
      r->fixed_buffers_ = io_uring_register_buffers(&r->ring_, &iov, 1) == 0;
    }
    return r;
  }

  IoBackend backend() const override { return IoBackend::kUring; }

  // Keeps the device busy while the caller works: a reader has twice `depth` buffers, so the
  // reads of the next wave are submitted into free buffers before on_done sees the completed ones
  // (the NVMe tier checks and copies each page there). The loop, per wave:
  //   1. queue reads into free buffers, up to `depth` in flight;
  //   2. if the previous wave completed reads: submit, then hand those buffers to on_done and
  //      free them (the new reads are in flight meanwhile);
  //   3. submit and wait for at least one completion; reap every completion: a finished read
  //      goes to the next wave's on_done list, a short or interrupted one is queued again.
  absl::Status ReadRuns(absl::Span<const ReadRun> runs,
                        const std::function<void(size_t, const uint8_t*)>& on_done) override {
    const int buffers = 2 * options_.depth;
    std::vector<Pending> slots(buffers);
    std::vector<int> free_slots, completed;
    for (int s = buffers - 1; s >= 0; --s) free_slots.push_back(s);
    size_t next = 0;
    absl::Status error;
    while (true) {
      while (error.ok() && next < runs.size() && in_flight_ < options_.depth) {
        const int s = free_slots.back();
        free_slots.pop_back();
        slots[s] = Pending{next++, 0, 0};
        Prep(s, runs[slots[s].run], slots[s]);
        ++in_flight_;
      }
      if (!completed.empty()) {
        ENGRAM_RETURN_IF_ERROR(Submit(0));
        for (int s : completed) {
          if (error.ok()) on_done(slots[s].run, Buffer(s));
          free_slots.push_back(s);
        }
        completed.clear();
      }
      if (in_flight_ == 0) break;
      ENGRAM_RETURN_IF_ERROR(Submit(1));
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        const int s = static_cast<int>(io_uring_cqe_get_data64(cqe));
        int res = cqe->res;
        if (options_.fault_hook) res = options_.fault_hook(res);
        Pending& p = slots[s];
        absl::Status e;
        switch (OnCompletion(res, runs[p.run], &p, counters_, path_, &e)) {
          case Outcome::kResubmit:
            if (error.ok()) {
              Prep(s, runs[p.run], p);
              continue;
            }
            free_slots.push_back(s);
            break;  // draining after an error: do not resubmit
          case Outcome::kDone:
            completed.push_back(s);
            break;
          case Outcome::kFailed:
            if (error.ok()) error = e;
            free_slots.push_back(s);
            break;
        }
        --in_flight_;
        counters_->in_flight.fetch_sub(1, std::memory_order_relaxed);
      }
      io_uring_cq_advance(&ring_, seen);
    }
    return error;
  }

 private:
  UringReader(int fd, std::string path, const IoReaderOptions& o, IoCounters* counters)
      : fd_(fd),
        path_(std::move(path)),
        options_(o),
        counters_(counters),
        buffers_(2 * static_cast<size_t>(o.depth) * o.max_read_bytes) {}

  // Submits what is queued and waits for `wait_for` completions.
  absl::Status Submit(unsigned wait_for) {
    const int r = io_uring_submit_and_wait(&ring_, wait_for);
    if (r < 0 && r != -EINTR && r != -EAGAIN) {
      // The ring itself failed: nothing we submitted can be trusted to complete, and late
      // completions would land in a later batch's slots. The caller must drop this reader.
      return PosixError("io_uring_submit for", path_, -r);
    }
    return absl::OkStatus();
  }

  uint8_t* Buffer(int slot) const {
    return buffers_.data() + static_cast<size_t>(slot) * options_.max_read_bytes;
  }

  // Queues the (rest of the) read of `run` into slot `s`'s buffer.
  void Prep(int s, const ReadRun& run, const Pending& p) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    uint8_t* buf = Buffer(s) + p.done;
    const unsigned len = run.length - p.done;
    const uint64_t off = run.offset + p.done;
    const int fd = fixed_file_ ? 0 : fd_;
    if (fixed_buffers_) {
      io_uring_prep_read_fixed(sqe, fd, buf, len, off, 0);
    } else {
      io_uring_prep_read(sqe, fd, buf, len, off);
    }
    if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(s));
    counters_->reads.fetch_add(1, std::memory_order_relaxed);
    if (p.done == 0 && p.resubmissions == 0) {
      counters_->in_flight.fetch_add(1, std::memory_order_relaxed);
    }
  }

  int fd_;
  std::string path_;
  IoReaderOptions options_;
  IoCounters* counters_;
  AlignedBuffer buffers_;
  io_uring ring_{};
  bool ring_ready_ = false;
  int in_flight_ = 0;  // reads submitted and not completed
  bool fixed_file_ = false;
  bool fixed_buffers_ = false;
};

}  // namespace

absl::string_view IoBackendName(IoBackend backend) {
  return backend == IoBackend::kUring ? "uring" : "pread";
}

absl::StatusOr<IoBackend> ParseIoBackend(absl::string_view name) {
  if (name == "uring") return IoBackend::kUring;
  if (name == "pread") return IoBackend::kPread;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown I/O backend \"", name, "\" (expected uring or pread)"));
}

absl::StatusOr<std::unique_ptr<IoReader>> IoReader::Create(int fd, const std::string& path,
                                                           const IoReaderOptions& options,
                                                           IoCounters* counters) {
  if (options.depth < 1 || options.depth > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("I/O depth ", options.depth, " is outside [1, 4096]"));
  }
  if (options.max_read_bytes < kIoAlignment || options.max_read_bytes % kIoAlignment != 0) {
    return absl::InvalidArgumentError("max_read_bytes must be a positive multiple of 4096");
  }
  if (options.backend == IoBackend::kUring) {
    auto uring = UringReader::Create(fd, path, options, counters);
    if (uring.ok()) return std::unique_ptr<IoReader>(std::move(*uring));
    if (counters != nullptr) counters->uring_fallbacks.fetch_add(1);
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      ENGRAM_LOG(WARNING).With("error", uring.status().message())
          << "io_uring unavailable; the cold tier falls back to pread, which is much slower. In a "
             "container the usual cause is a seccomp profile that blocks io_uring (the runtime's "
             "default does): use deploy/seccomp/engram-memory.json (docs/operations.md). Counted "
             "in engram_nvme_uring_fallback_readers";
    }
  }
  return std::unique_ptr<IoReader>(new PreadReader(fd, path, options, counters));
}

}  // namespace engram
