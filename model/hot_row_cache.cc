#include "model/hot_row_cache.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace engram {
namespace {

constexpr int kSketchDepth = 4;
constexpr uint64_t kSketchSeeds[kSketchDepth] = {0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full,
                                                 0x165667b19e3779f9ull, 0x27d4eb2f165667c5ull};
// Slot indices are uint32_t and kHotSlotMiss is reserved.
constexpr uint64_t kMaxSlots = uint64_t{0xFFFFFFFE};
// Default sketch counters per slot: the aging window (10 x width) then spans 80 x the cache, so a
// resident at the cache's edge of a Zipf law is seen several times per window and a one-off key
// (a scan) rarely ties with it.
constexpr uint64_t kSketchPerSlot = 8;

uint64_t RoundUpPow2(uint64_t n) {
  uint64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Sorted, distinct entry indices with their current values.
std::vector<HotMapWrite> Snapshot(std::vector<uint64_t> changed, const HotSlotMap& map) {
  std::sort(changed.begin(), changed.end());
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  std::vector<HotMapWrite> out;
  out.reserve(changed.size());
  for (uint64_t i : changed) out.push_back({i, map.entries()[i]});
  return out;
}

}  // namespace

// ---- Keys and sizes -----------------------------------------------------------------------------

GlobalRowIds::GlobalRowIds(absl::Span<const int64_t> rows_per_layer) {
  bases_.reserve(rows_per_layer.size());
  for (int64_t rows : rows_per_layer) {
    bases_.push_back(total_);
    total_ += static_cast<uint64_t>(std::max<int64_t>(rows, 0));
  }
}

uint64_t HotMapEntries(uint64_t slots) { return RoundUpPow2(std::max<uint64_t>(2, 2 * slots)); }

HotCacheGeometry HotCacheGeometryForSlots(uint64_t slots, uint32_t row_bytes) {
  HotCacheGeometry g;
  g.row_bytes = row_bytes;
  g.slots = std::min(slots, kMaxSlots);
  g.map_entries = HotMapEntries(g.slots);
  g.pool_bytes = g.slots * row_bytes;
  g.map_bytes = g.map_entries * sizeof(HotSlot);
  return g;
}

absl::StatusOr<HotCacheGeometry> HotCacheGeometryFor(uint64_t capacity_bytes, uint32_t row_bytes) {
  if (row_bytes == 0) return absl::InvalidArgumentError("hot-row cache: row_bytes must be > 0");
  auto fits = [&](uint64_t s) {
    const HotCacheGeometry g = HotCacheGeometryForSlots(s, row_bytes);
    return g.pool_bytes + g.map_bytes <= capacity_bytes;
  };
  // The cost grows with the slot count: binary search for the largest that fits.
  uint64_t lo = 0, hi = std::min(capacity_bytes / row_bytes, kMaxSlots);
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return HotCacheGeometryForSlots(lo, row_bytes);
}

// ---- The map ------------------------------------------------------------------------------------

HotSlotMap::HotSlotMap(uint64_t entries)
    : entries_(entries, HotSlot{kEmptyRow, 0, 0}), mask_(entries - 1) {}

void HotSlotMap::Insert(uint64_t key, uint32_t slot, std::vector<uint64_t>* changed) {
  const uint64_t home = HotSlotHome(key, mask_);
  uint64_t i = home;
  while (entries_[i].row != kEmptyRow) i = (i + 1) & mask_;
  entries_[i] = HotSlot{key, slot, static_cast<uint32_t>((i - home) & mask_)};
  ++size_;
  changed->push_back(i);
}

bool HotSlotMap::Erase(uint64_t key, std::vector<uint64_t>* changed) {
  uint64_t i = HotSlotHome(key, mask_);
  while (entries_[i].row != key) {
    if (entries_[i].row == kEmptyRow) return false;
    i = (i + 1) & mask_;
  }
  // Backward shift: move each later entry of the chain into the hole when the hole lies between
  // its home and its position, so every key stays reachable without an empty entry on the way.
  for (uint64_t j = (i + 1) & mask_; entries_[j].row != kEmptyRow; j = (j + 1) & mask_) {
    const uint64_t hole_distance = (j - i) & mask_;
    if (entries_[j].probe >= hole_distance) {
      entries_[i] = entries_[j];
      entries_[i].probe -= static_cast<uint32_t>(hole_distance);
      changed->push_back(i);
      i = j;
    }
  }
  entries_[i] = HotSlot{kEmptyRow, 0, 0};
  changed->push_back(i);
  --size_;
  return true;
}

absl::Status HotSlotMap::CheckInvariants() const {
  absl::flat_hash_set<uint64_t> keys;
  absl::flat_hash_set<uint32_t> slots;
  uint64_t n = 0;
  for (uint64_t i = 0; i <= mask_; ++i) {
    const HotSlot& e = entries_[i];
    if (e.row == kEmptyRow) {
      if (e.probe != 0) return absl::InternalError(absl::StrCat("empty entry ", i, " has a probe"));
      continue;
    }
    ++n;
    const uint64_t home = HotSlotHome(e.row, mask_);
    if (e.probe != ((i - home) & mask_)) {
      return absl::InternalError(absl::StrCat("entry ", i, " (key ", e.row, ") has probe ", e.probe,
                                              ", its distance from home ", home, " is ",
                                              (i - home) & mask_));
    }
    for (uint64_t k = home; k != i; k = (k + 1) & mask_) {
      if (entries_[k].row == kEmptyRow) {
        return absl::InternalError(absl::StrCat("key ", e.row, " at entry ", i,
                                                " is unreachable: entry ", k, " is empty"));
      }
    }
    if (!keys.insert(e.row).second) {
      return absl::InternalError(absl::StrCat("key ", e.row, " appears twice"));
    }
    if (!slots.insert(e.slot).second) {
      return absl::InternalError(absl::StrCat("slot ", e.slot, " is mapped twice"));
    }
  }
  if (n != size_) return absl::InternalError(absl::StrCat("size ", size_, " but ", n, " keys"));
  return absl::OkStatus();
}

// ---- The cache ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<HotRowCache>> HotRowCache::Create(const Options& options) {
  if (options.row_bytes == 0) {
    return absl::InvalidArgumentError("hot-row cache: row_bytes must be > 0");
  }
  auto g = HotCacheGeometryFor(options.capacity_bytes, options.row_bytes);
  if (!g.ok()) return g.status();
  return CreateWithSlots(options, g->slots);
}

absl::StatusOr<std::unique_ptr<HotRowCache>> HotRowCache::CreateWithSlots(Options options,
                                                                          uint64_t slots) {
  if (options.row_bytes == 0) {
    return absl::InvalidArgumentError("hot-row cache: row_bytes must be > 0");
  }
  if (options.victim_samples == 0) {
    return absl::InvalidArgumentError("hot-row cache: victim_samples must be > 0");
  }
  const HotCacheGeometry g = HotCacheGeometryForSlots(slots, options.row_bytes);
  return std::unique_ptr<HotRowCache>(new HotRowCache(options, g));
}

HotRowCache::HotRowCache(const Options& options, const HotCacheGeometry& geometry)
    : options_(options),
      geometry_(geometry),
      map_(geometry.map_entries),
      slot_keys_(geometry.slots, kEmptyRow),
      rng_(options.seed) {
  free_slots_.reserve(geometry.slots);
  for (uint64_t s = geometry.slots; s > 0; --s) free_slots_.push_back(static_cast<uint32_t>(s - 1));
  const uint64_t width =
      std::min<uint64_t>(RoundUpPow2(std::max<uint64_t>(
                             1024, options.sketch_width != 0 ? options.sketch_width
                                                             : kSketchPerSlot * geometry.slots)),
                         uint64_t{1} << 26);
  sketch_mask_ = width - 1;
  // TinyLFU's reset: about 10 accesses per counter, then every counter halves.
  sketch_window_ = 10 * width;
  sketch_.assign(kSketchDepth * width, 0);
  if (options_.max_candidates == 0) {
    options_.max_candidates = std::max<size_t>(4096, geometry.slots / 4);
  }
  counters_.slots = geometry.slots;
  in_window_.assign(geometry.slots, 0);
  window_slots_ = static_cast<uint64_t>(std::clamp(options.window_fraction, 0.0, 1.0) *
                                        static_cast<double>(geometry.slots));
  if (options.window_fraction > 0 && geometry.slots >= 2) {
    window_slots_ = std::clamp<uint64_t>(window_slots_, 1, geometry.slots - 1);
  } else {
    window_slots_ = 0;
  }
}

uint32_t HotRowCache::SampleMainVictim(const absl::flat_hash_set<uint64_t>& keep,
                                       uint32_t* estimate) {
  uint32_t victim = kHotSlotMiss;
  *estimate = UINT32_MAX;
  const uint32_t samples = options_.victim_samples;
  for (uint32_t tries = 0, found = 0; found < samples && tries < 4 * samples; ++tries) {
    const uint32_t s = static_cast<uint32_t>(NextRandom() % geometry_.slots);
    if (in_window_[s] || slot_keys_[s] == kEmptyRow || keep.contains(slot_keys_[s])) continue;
    ++found;
    const uint32_t e = Estimate(slot_keys_[s]);
    if (e < *estimate) {
      *estimate = e;
      victim = s;
    }
  }
  return victim;
}

size_t HotRowCache::SketchIndex(uint64_t key, int i) const {
  return i * (sketch_mask_ + 1) + (SplitMix64Mix(key ^ kSketchSeeds[i]) & sketch_mask_);
}

uint32_t HotRowCache::Estimate(uint64_t key) const {
  uint32_t estimate = UINT16_MAX;
  for (int i = 0; i < kSketchDepth; ++i) {
    estimate = std::min<uint32_t>(estimate, sketch_[SketchIndex(key, i)]);
  }
  return estimate;
}

void HotRowCache::CountAccess(uint64_t key, uint32_t n) {
  for (int i = 0; i < kSketchDepth; ++i) {
    uint16_t& c = sketch_[SketchIndex(key, i)];
    c = static_cast<uint16_t>(std::min<uint32_t>(uint32_t{c} + n, UINT16_MAX));
  }
}

uint64_t HotRowCache::NextRandom() { return SplitMix64Next(&rng_); }

HotRowCacheCounters HotRowCache::counters() const {
  HotRowCacheCounters c = counters_;
  c.occupied_slots = map_.size();
  return c;
}

HotCachePlan HotRowCache::Fill(absl::Span<const HotKeyCount> hottest) {
  HotCachePlan plan;
  std::vector<uint64_t> changed;
  for (const HotKeyCount& hk : hottest) {
    if (hk.key == kEmptyRow) continue;
    // Seeding adds the counts without advancing the aging window (as AccessStats::Seed does).
    const double c = std::ceil(std::max(0.0, hk.count));
    CountAccess(hk.key, static_cast<uint32_t>(std::min<double>(c, UINT16_MAX)));
    // The window's share stays free for the rows that miss later.
    if (free_slots_.size() <= window_slots_ || map_.Find(hk.key) != kHotSlotMiss) continue;
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    slot_keys_[slot] = hk.key;
    map_.Insert(hk.key, slot, &changed);
    plan.loads.push_back({hk.key, slot});
    candidates_.erase(hk.key);
    ++counters_.filled;
  }
  plan.map = Snapshot(std::move(changed), map_);
  return plan;
}

void HotRowCache::Record(absl::Span<const uint64_t> keys) {
  for (uint64_t key : keys) {
    if (key == kEmptyRow) continue;
    CountAccess(key, 1);
    if (++since_halving_ >= sketch_window_) {
      for (uint16_t& c : sketch_) c >>= 1;
      since_halving_ = 0;
    }
    if (map_.Find(key) != kHotSlotMiss) {
      ++counters_.hits;
      continue;
    }
    ++counters_.misses;
    if (candidates_.size() < options_.max_candidates) {
      candidates_.insert(key);
    } else if (!candidates_.contains(key)) {
      ++counters_.dropped_candidates;
    }
  }
}

HotCachePlan HotRowCache::PlanUpdates(size_t max_rows, absl::Span<const uint64_t> protect) {
  HotCachePlan plan;
  if (candidates_.empty() || geometry_.slots == 0) {
    candidates_.clear();
    return plan;
  }
  // Most frequent candidates first (ties by key, so a plan does not depend on hash-set order).
  std::vector<std::pair<uint32_t, uint64_t>> order;
  order.reserve(candidates_.size());
  for (uint64_t key : candidates_) order.push_back({Estimate(key), key});
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  // Keys that must stay: the caller's, and those admitted by this plan.
  const absl::flat_hash_set<uint64_t> protected_keys(protect.begin(), protect.end());
  absl::flat_hash_set<uint64_t> keep = protected_keys;

  // Decide first, then change the map: all removals before any insertion, so the unmap phase
  // never holds an entry whose row is not loaded yet.
  std::vector<uint64_t> victims;
  absl::flat_hash_set<uint64_t> plan_keys;  // admitted by this plan
  size_t next = 0;
  for (; next < order.size() && plan.loads.size() < max_rows; ++next) {
    const auto [estimate, key] = order[next];
    if (map_.Find(key) != kHotSlotMiss) continue;  // placed meanwhile (Fill)
    uint32_t slot;
    bool into_window = window_slots_ > 0 && window_.size() < window_slots_;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else if (window_slots_ > 0 && window_.size() >= window_slots_) {
      // The key enters the window; the window's oldest key moves on to the main part if it beats
      // a main victim, else it leaves.
      // A protected oldest key goes to the back of the window (it stays cached); a key this plan
      // admitted at the front means the window turned over within the plan: stop here.
      for (size_t turns = 0;
           turns < window_.size() && protected_keys.contains(slot_keys_[window_.front()]) &&
           !plan_keys.contains(slot_keys_[window_.front()]);
           ++turns) {
        window_.push_back(window_.front());
        window_.pop_front();
      }
      const uint32_t oldest = window_.front();
      const uint64_t oldest_key = slot_keys_[oldest];
      if (keep.contains(oldest_key)) break;
      window_.pop_front();
      in_window_[oldest] = 0;
      uint32_t victim_estimate;
      const uint32_t victim = SampleMainVictim(keep, &victim_estimate);
      slot = victim != kHotSlotMiss && Estimate(oldest_key) > victim_estimate ? victim : oldest;
      victims.push_back(slot_keys_[slot]);
      ++counters_.evictions;
      into_window = true;
    } else {
      // No window (or one still filling after Fill): the key must beat a main victim.
      uint32_t victim_estimate;
      const uint32_t victim = SampleMainVictim(keep, &victim_estimate);
      if (victim == kHotSlotMiss || estimate <= victim_estimate) {
        ++counters_.rejections;
        continue;
      }
      slot = victim;
      victims.push_back(slot_keys_[slot]);
      ++counters_.evictions;
    }
    if (into_window) {
      window_.push_back(slot);
      in_window_[slot] = 1;
    }
    slot_keys_[slot] = key;
    keep.insert(key);
    plan_keys.insert(key);
    plan.loads.push_back({key, slot});
    ++counters_.admissions;
  }

  std::vector<uint64_t> changed;
  for (uint64_t v : victims) map_.Erase(v, &changed);
  plan.unmap = Snapshot(std::move(changed), map_);
  changed.clear();
  for (const HotRowLoad& load : plan.loads) map_.Insert(load.key, load.slot, &changed);
  plan.map = Snapshot(std::move(changed), map_);

  // Candidates cut off by max_rows wait for the next plan; the rest were decided.
  absl::flat_hash_set<uint64_t> rest;
  for (size_t i = next; i < order.size(); ++i) rest.insert(order[i].second);
  candidates_ = std::move(rest);
  return plan;
}

}  // namespace engram
