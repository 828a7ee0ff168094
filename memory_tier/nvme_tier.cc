#include "memory_tier/nvme_tier.h"

#include <fcntl.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"

namespace engram {

absl::string_view CorruptionSourceName(CorruptionSource source) {
  switch (source) {
    case CorruptionSource::kLoad:
      return "load";
    case CorruptionSource::kRead:
      return "read";
    case CorruptionSource::kScrub:
      return "scrub";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<NvmeTier>> NvmeTier::Open(const Manifest& manifest,
                                                         const std::string& path,
                                                         const Options& options) {
  ENGRAM_RETURN_IF_ERROR(CheckServableFormat(manifest, path));
  ENGRAM_RETURN_IF_ERROR(QuickCheckRowFile(manifest, path));
  if (options.max_readers < 1) return absl::InvalidArgumentError("max_readers must be >= 1");
  auto tier = std::unique_ptr<NvmeTier>(new NvmeTier());
  tier->path_ = path;
  tier->layout_ = manifest.layout;
  tier->options_ = options;
  ENGRAM_ASSIGN_OR_RETURN(tier->page_crcs_, ReadPageChecksums(manifest, path));
  if (options.direct_io) {
    auto fd = OpenFile(path, O_RDONLY | O_DIRECT);
    if (fd.ok()) {
      tier->fd_ = std::move(*fd);
      tier->direct_ = true;
    } else if (fd.status().code() != absl::StatusCode::kInvalidArgument) {
      return fd.status();
    } else {
      ENGRAM_LOG(WARNING).With("file", path)
          << "O_DIRECT refused here; reading through the page cache";
    }
  }
  if (!tier->fd_.valid()) {
    ENGRAM_ASSIGN_OR_RETURN(tier->fd_, OpenFile(path, O_RDONLY));
  }
  // One reader now: I/O set-up errors surface at open, and the backend is known.
  ENGRAM_ASSIGN_OR_RETURN(auto reader, tier->Acquire());
  tier->backend_ = reader->backend();
  tier->Release(std::move(reader));
  return tier;
}

NvmeTier::~NvmeTier() = default;

absl::StatusOr<std::unique_ptr<IoReader>> NvmeTier::Acquire() {
  absl::MutexLock lock(&mu_);
  auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !idle_.empty() || readers_ < options_.max_readers;
  };
  mu_.Await(absl::Condition(&available));
  if (!idle_.empty()) {
    auto r = std::move(idle_.back());
    idle_.pop_back();
    return r;
  }
  ++readers_;
  auto r = IoReader::Create(fd_.get(), path_, options_.io, &counters_);
  if (!r.ok()) --readers_;
  return r;
}

void NvmeTier::Release(std::unique_ptr<IoReader> reader) {
  absl::MutexLock lock(&mu_);
  idle_.push_back(std::move(reader));
}

void NvmeTier::Discard(std::unique_ptr<IoReader> reader) {
  reader.reset();
  absl::MutexLock lock(&mu_);
  --readers_;
}

absl::Status NvmeTier::Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                              std::vector<uint32_t>* missing) {
  const RowLayout& l = layout_;
  ENGRAM_RETURN_IF_ERROR(CheckRowIds(row_ids, l.rows));
  if (row_ids.empty()) return absl::OkStatus();
  // (page, position) of every row, sorted: each distinct page is read once, adjacent pages in
  // one run.
  std::vector<std::pair<uint64_t, uint32_t>> order(row_ids.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = {l.PageOf(row_ids[i]), i};
  std::sort(order.begin(), order.end());
  const uint64_t max_pages = options_.io.max_read_bytes / l.page_bytes;
  std::vector<ReadRun> runs;
  std::vector<uint64_t> run_first_page;
  std::vector<size_t> run_begin;  // index into `order` of the run's first row
  for (size_t k = 0; k < order.size(); ++k) {
    const uint64_t page = order[k].first;
    if (!runs.empty()) {
      const uint64_t last = run_first_page.back() + runs.back().length / l.page_bytes - 1;
      if (page == last) continue;  // same page: already being read
      if (page == last + 1 && runs.back().length / l.page_bytes < max_pages) {
        runs.back().length += l.page_bytes;
        continue;
      }
    }
    runs.push_back(ReadRun{l.PageOffset(page), l.page_bytes});
    run_first_page.push_back(page);
    run_begin.push_back(k);
  }
  run_begin.push_back(order.size());
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<IoReader> reader, Acquire());
  absl::Status corrupt;  // the batch's lowest bad page (runs complete in any order)
  uint64_t corrupt_page = 0, bad_pages = 0;
  absl::Status s = reader->ReadRuns(runs, [&](size_t run, const uint8_t* data) {
    uint64_t checked = ~uint64_t{0};
    bool good = false;
    for (size_t k = run_begin[run]; k < run_begin[run + 1]; ++k) {
      const auto [page, pos] = order[k];
      const uint8_t* page_data = data + (page - run_first_page[run]) * l.page_bytes;
      if (page != checked) {  // rows are sorted by page: check each page once, before its rows
        checked = page;
        absl::Status check = CheckPage(l, path_, page, page_data, page_crcs_[page]);
        good = check.ok();
        if (!good) {
          ++bad_pages;
          if (options_.corruption != nullptr) {
            options_.corruption->OnCorruptPage(page, CorruptionSource::kRead, check);
          }
          if (corrupt.ok() || page < corrupt_page) {
            corrupt = std::move(check);
            corrupt_page = page;
          }
        }
      }
      if (!good) continue;
      const uint64_t row = row_ids[pos];
      std::memcpy(out + static_cast<size_t>(pos) * l.row_bytes, page_data + l.InPageOffset(row),
                  l.row_bytes);
    }
  });
  if (s.ok()) {
    Release(std::move(reader));
  } else {
    Discard(std::move(reader));  // an I/O error is rare; a fresh ring costs little
    return s;
  }
  if (!corrupt.ok()) {
    // The rows of a bad page are never served: the whole batch fails (a response carries every
    // row or none), the other batches go on.
    return absl::DataLossError(
        absl::StrCat(corrupt.message(),
                     bad_pages > 1 ? absl::StrCat(" (and ", bad_pages - 1, " more bad pages)") : "",
                     "; the table is marked for re-import"));
  }
  return absl::OkStatus();
}

absl::Status NvmeTier::ScrubPages(uint64_t first, uint32_t count, uint64_t* bad) {
  const RowLayout& l = layout_;
  if (count == 0) return absl::OkStatus();
  if (count > kMaxScrubPages || first + count > l.pages()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scrub of pages [", first, ", ", first + count, ") of ", l.pages()));
  }
  absl::MutexLock lock(&scrub_mu_);
  if (scrub_buffer_ == nullptr) {
    void* p = nullptr;
    if (posix_memalign(&p, kIoAlignment, size_t{kMaxScrubPages} * l.page_bytes) != 0) {
      return absl::ResourceExhaustedError("no scrub buffer");
    }
    scrub_buffer_ = std::unique_ptr<uint8_t, void (*)(void*)>(static_cast<uint8_t*>(p), &free);
  }
  uint8_t* buf = scrub_buffer_.get();
  ENGRAM_RETURN_IF_ERROR(
      PreadAll(fd_.get(), buf, size_t{count} * l.page_bytes, l.PageOffset(first), path_));
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t page = first + i;
    absl::Status check = CheckPage(l, path_, page, buf + size_t{i} * l.page_bytes, page_crcs_[page]);
    if (check.ok()) continue;
    ++*bad;
    if (options_.corruption != nullptr) {
      options_.corruption->OnCorruptPage(page, CorruptionSource::kScrub, check);
    }
  }
  return absl::OkStatus();
}

}  // namespace engram
