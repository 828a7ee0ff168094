#include "memory_tier/tiered_store.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace engram {
namespace {

// Calls fn(j) for every position j < n that is not in `missing` (sorted), i.e. every row a tier
// served.
template <typename Fn>
void ForEachServed(size_t n, const std::vector<uint32_t>& missing, Fn fn) {
  for (size_t j = 0, m = 0; j < n; ++j) {
    if (m < missing.size() && missing[m] == j) {
      ++m;
      continue;
    }
    fn(j);
  }
}

}  // namespace

TieredStore::TieredStore(std::vector<Tier*> tiers, DramTier* cache, uint64_t rows,
                         const Options& options, StoreObserver* observer)
    : tiers_(std::move(tiers)),
      cache_(cache),
      rows_(rows),
      options_(options),
      observer_(observer),
      counters_(tiers_.size()),
      stats_(options.stats) {
  row_bytes_ = tiers_.empty() ? 0 : tiers_.front()->row_bytes();
  if (cache_ != nullptr && cache_->resident()) cache_ = nullptr;  // nothing to promote into
  for (size_t k = 0; k < tiers_.size(); ++k) {
    if (tiers_[k] == cache_) cache_index_ = k;
  }
  promoter_ = std::thread([this] { PromoterLoop(); });
}

TieredStore::~TieredStore() {
  {
    absl::MutexLock lock(&queue_mu_);
    stop_ = true;
  }
  promoter_.join();
}

absl::Status TieredStore::Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                                 std::vector<uint64_t>* served) {
  served->assign(tiers_.size(), 0);
  ENGRAM_RETURN_IF_ERROR(CheckRowIds(row_ids, rows_));
  if (row_ids.empty()) return absl::OkStatus();
  Record record;
  record.accessed.assign(row_ids.begin(), row_ids.end());
  // pending[j] = input position of the j-th row still to be served.
  std::vector<uint32_t> pending(row_ids.size());
  for (uint32_t i = 0; i < pending.size(); ++i) pending[i] = i;
  std::vector<uint64_t> ids;
  std::vector<uint8_t> scratch;
  std::vector<uint32_t> missing;
  for (size_t k = 0; k < tiers_.size() && !pending.empty(); ++k) {
    const auto start = std::chrono::steady_clock::now();
    missing.clear();
    if (k == 0) {  // every row: write straight into `out`
      ENGRAM_RETURN_IF_ERROR(tiers_[k]->Lookup(row_ids, out, &missing));
    } else {
      ids.clear();
      for (uint32_t p : pending) ids.push_back(row_ids[p]);
      scratch.resize(ids.size() * row_bytes_);
      ENGRAM_RETURN_IF_ERROR(tiers_[k]->Lookup(ids, scratch.data(), &missing));
      // Rows served below the cache are promotion candidates.
      const bool promote = cache_ != nullptr && options_.promote && k > cache_index_;
      ForEachServed(ids.size(), missing, [&](size_t j) {
        const uint8_t* row = &scratch[j * row_bytes_];
        std::memcpy(out + static_cast<size_t>(pending[j]) * row_bytes_, row, row_bytes_);
        if (promote) {
          record.candidates.push_back(ids[j]);
          record.candidate_data.insert(record.candidate_data.end(), row, row + row_bytes_);
        }
      });
    }
    const uint64_t hit = pending.size() - missing.size();
    (*served)[k] = hit;
    TierCounters& c = counters_[k];
    c.lookups.fetch_add(1, std::memory_order_relaxed);
    c.hits.fetch_add(hit, std::memory_order_relaxed);
    c.misses.fetch_add(missing.size(), std::memory_order_relaxed);
    c.bytes.fetch_add(hit * row_bytes_, std::memory_order_relaxed);
    if (observer_ != nullptr) {
      observer_->OnTierLookup(
          k, pending.size(), hit, hit * row_bytes_,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    // Keep only the missed positions.
    for (size_t m = 0; m < missing.size(); ++m) pending[m] = pending[missing[m]];
    pending.resize(missing.size());
  }
  if (!pending.empty()) {
    return absl::InternalError(absl::StrCat(pending.size(), " rows (first id ", row_ids[pending[0]],
                                            ") were found in no tier"));
  }
  Enqueue(std::move(record));
  return absl::OkStatus();
}

void TieredStore::RecordExternalHits(absl::Span<const uint64_t> row_ids) {
  Record record;
  for (uint64_t id : row_ids) {
    if (id < rows_) record.accessed.push_back(id);
  }
  if (!record.accessed.empty()) Enqueue(std::move(record));
}

void TieredStore::Enqueue(Record record) {
  absl::MutexLock lock(&queue_mu_);
  const size_t n = record.accessed.size();
  if (queued_rows_ + n > options_.queue_rows && !queue_.empty()) {
    dropped_.fetch_add(n, std::memory_order_relaxed);
    return;
  }
  queued_rows_ += n;
  record.seq = ++enqueued_seq_;
  queue_.push_back(std::move(record));
}

void TieredStore::Flush() {
  absl::MutexLock lock(&queue_mu_);
  const uint64_t target = enqueued_seq_;
  auto done = [this, target]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) { return done_seq_ >= target; };
  queue_mu_.Await(absl::Condition(&done));
}

void TieredStore::PromoterLoop() {
  while (true) {
    Record record;
    {
      absl::MutexLock lock(&queue_mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
        return stop_ || !queue_.empty();
      };
      queue_mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping
      record = std::move(queue_.front());
      queue_.pop_front();
      queued_rows_ -= record.accessed.size();
    }
    {
      absl::MutexLock lock(&stats_mu_);
      for (uint64_t row : record.accessed) stats_.Record(row);
      for (size_t i = 0; i < record.candidates.size(); ++i) {
        Offer(record.candidates[i], &record.candidate_data[i * row_bytes_]);
      }
    }
    absl::MutexLock lock(&queue_mu_);
    done_seq_ = record.seq;
  }
}

void TieredStore::Offer(uint64_t row, const uint8_t* data) {
  const uint64_t set = cache_->SetOf(row);
  cache_->SetRows(set, &set_rows_);
  int victim = -1;
  uint32_t victim_count = UINT32_MAX;
  for (uint32_t w = 0; w < set_rows_.size(); ++w) {
    if (set_rows_[w] == row) return;     // already cached (e.g. offered twice in one batch)
    if (set_rows_[w] == ~uint64_t{0}) {  // an empty way always admits
      victim = static_cast<int>(w);
      victim_count = 0;
      break;
    }
    const uint32_t c = stats_.Estimate(set_rows_[w]);
    if (c < victim_count) {
      victim = static_cast<int>(w);
      victim_count = c;
    }
  }
  if (victim_count > 0 && stats_.Estimate(row) <= victim_count) {
    rejections_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  cache_->WriteSlot(static_cast<uint32_t>(victim), row, data);
  promotions_.fetch_add(1, std::memory_order_relaxed);
}

absl::Status TieredStore::WarmUp(absl::Span<const RowCount> hottest) {
  if (cache_ == nullptr || hottest.empty()) return absl::OkStatus();
  std::vector<uint64_t> ids;
  for (const RowCount& rc : hottest) {
    if (rc.row < rows_) ids.push_back(rc.row);
  }
  // Read in batches from the tier below the cache, offering hottest first.
  constexpr size_t kBatch = 4096;
  std::vector<uint8_t> buf(kBatch * row_bytes_);
  std::vector<uint32_t> missing;
  Tier* below = tiers_.back();
  absl::Status corrupt;
  for (size_t i = 0; i < ids.size(); i += kBatch) {
    absl::Span<const uint64_t> batch(ids.data() + i, std::min(kBatch, ids.size() - i));
    missing.clear();
    absl::Status s = below->Lookup(batch, buf.data(), &missing);
    if (s.code() == absl::StatusCode::kDataLoss) {
      // A bad page (reported by the tier) fails the whole batch: load the batch's rows one by
      // one, so every good row still gets in and no row of a bad page does.
      if (corrupt.ok()) corrupt = s;
      absl::MutexLock lock(&stats_mu_);
      for (size_t j = 0; j < batch.size(); ++j) {
        std::vector<uint32_t> one_missing;
        if (below->Lookup(batch.subspan(j, 1), buf.data(), &one_missing).ok() &&
            one_missing.empty()) {
          Offer(batch[j], buf.data());
        }
      }
      continue;
    }
    ENGRAM_RETURN_IF_ERROR(s);
    absl::MutexLock lock(&stats_mu_);
    ForEachServed(batch.size(), missing, [&](size_t j) { Offer(batch[j], &buf[j * row_bytes_]); });
  }
  return corrupt;
}

std::vector<RowCount> TieredStore::Hottest(size_t n) {
  absl::MutexLock lock(&stats_mu_);
  return stats_.Hottest(n);
}

void TieredStore::SeedStats(absl::Span<const RowCount> counts) {
  absl::MutexLock lock(&stats_mu_);
  stats_.Seed(counts);
}

void TieredStore::DecayStats(double factor) {
  absl::MutexLock lock(&stats_mu_);
  stats_.Decay(factor);
}

}  // namespace engram
