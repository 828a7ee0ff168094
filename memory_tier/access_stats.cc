#include "memory_tier/access_stats.h"

#include <algorithm>
#include <cmath>

#include "common/splitmix64.h"

namespace engram {
namespace {

constexpr int kDepth = 4;
constexpr uint64_t kSeeds[kDepth] = {0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full,
                                     0x165667b19e3779f9ull, 0x27d4eb2f165667c5ull};

uint64_t Hash(uint64_t row, int i) { return SplitMix64Mix(row ^ kSeeds[i]); }

}  // namespace

AccessStats::AccessStats(const Options& options) {
  uint64_t width = 1024;
  while (width < options.sketch_width && width < (uint64_t{1} << 26)) width <<= 1;
  mask_ = width - 1;
  // TinyLFU resets after about 10 accesses per counter.
  window_ = width * 10;
  tracked_rows_ = std::max<size_t>(1, options.tracked_rows);
  sketch_.assign(kDepth * width, 0);
}

size_t AccessStats::Slot(uint64_t row, int i) const {
  return i * (mask_ + 1) + (Hash(row, i) & mask_);
}

uint32_t AccessStats::AddToSketch(uint64_t row, uint32_t n) {
  uint32_t estimate = UINT32_MAX;
  for (int i = 0; i < kDepth; ++i) {
    uint16_t& c = sketch_[Slot(row, i)];
    c = static_cast<uint16_t>(std::min<uint32_t>(uint32_t{c} + n, UINT16_MAX));
    estimate = std::min<uint32_t>(estimate, c);
  }
  return estimate;
}

void AccessStats::Record(uint64_t row, uint32_t n) {
  accesses_ += n;
  const uint32_t estimate = AddToSketch(row, n);
  auto it = hot_.find(row);
  if (it != hot_.end()) {
    it->second += n;
  } else if (estimate >= threshold_) {
    hot_.emplace(row, static_cast<double>(estimate));
    if (hot_.size() >= 2 * tracked_rows_) Prune();
  }
  since_reset_ += n;
  if (since_reset_ >= window_) {
    for (uint16_t& c : sketch_) c >>= 1;
    since_reset_ = 0;
  }
}

uint32_t AccessStats::Estimate(uint64_t row) const {
  uint32_t estimate = UINT32_MAX;
  for (int i = 0; i < kDepth; ++i) {
    estimate = std::min<uint32_t>(estimate, sketch_[Slot(row, i)]);
  }
  return estimate;
}

void AccessStats::Prune() {
  std::vector<RowCount> all;
  all.reserve(hot_.size());
  for (const auto& [row, count] : hot_) all.push_back({row, count});
  std::nth_element(all.begin(), all.begin() + (tracked_rows_ - 1), all.end(), Hotter);
  threshold_ = all[tracked_rows_ - 1].count;
  hot_.clear();
  for (size_t i = 0; i < tracked_rows_; ++i) hot_.emplace(all[i].row, all[i].count);
}

void AccessStats::Decay(double factor) {
  for (auto& [row, count] : hot_) count *= factor;
  threshold_ *= factor;
  // Rows whose count decayed to nothing leave.
  absl::erase_if(hot_, [](const auto& kv) { return kv.second < 1e-3; });
}

std::vector<RowCount> AccessStats::Hottest(size_t n) const {
  std::vector<RowCount> all;
  all.reserve(hot_.size());
  for (const auto& [row, count] : hot_) all.push_back({row, count});
  n = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + n, all.end(), Hotter);
  all.resize(n);
  return all;
}

void AccessStats::Seed(absl::Span<const RowCount> counts) {
  for (const RowCount& rc : counts) {
    AddToSketch(rc.row, static_cast<uint32_t>(std::min<double>(std::ceil(rc.count), UINT16_MAX)));
    hot_[rc.row] += rc.count;
    if (hot_.size() >= 2 * tracked_rows_) Prune();
  }
}

}  // namespace engram
