#include "memory_tier/table_mrc.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <queue>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "memory_tier/access_stats.h"
#include "memory_tier/arena.h"
#include "memory_tier/table_profile.h"
#include "model/hot_row_cache.h"

namespace engram {
namespace {

constexpr uint64_t kEmpty = ~uint64_t{0};

// The trace: global row ids (model/hot_slot_map.h), position-major, each layer's columns.
struct Trace {
  std::vector<uint64_t> keys;
  std::vector<uint64_t> bases;       // per layer index
  std::vector<uint64_t> layer_rows;  // per layer index
  std::vector<int> layer_ids;
  uint64_t step = 0;  // lookups per simulated step
  int LayerOf(uint64_t key) const {
    return static_cast<int>(std::upper_bound(bases.begin(), bases.end(), key) - bases.begin()) - 1;
  }
};

double HitRate(uint64_t hits, uint64_t lookups) {
  return lookups == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(lookups);
}

// The HBM cache as the worker runs it: Record a step, then apply one plan.
double SimulateHotRowCache(const Trace& t, uint64_t slots, const MrcOptions& o) {
  HotRowCache::Options co;
  co.row_bytes = std::max<uint32_t>(1, o.row_bytes);
  if (o.hbm_window >= 0) co.window_fraction = o.hbm_window;
  auto cache = HotRowCache::CreateWithSlots(co, slots);
  if (!cache.ok()) return 0;
  for (size_t i = 0; i < t.keys.size(); i += t.step) {
    const size_t n = std::min<size_t>(t.step, t.keys.size() - i);
    (*cache)->Record(absl::MakeConstSpan(t.keys.data() + i, n));
    (*cache)->PlanUpdates(o.update_rows);
  }
  return (*cache)->counters().hit_rate();
}

// Belady's MIN with bypass over a fully associative cache of `slots` rows.
double SimulateBelady(const Trace& t, const std::vector<uint64_t>& next_use, uint64_t slots) {
  if (slots == 0) return 0;
  absl::flat_hash_map<uint64_t, uint64_t> cached;               // key -> its next use
  std::priority_queue<std::pair<uint64_t, uint64_t>> furthest;  // (next use, key), lazily stale
  uint64_t hits = 0;
  for (size_t i = 0; i < t.keys.size(); ++i) {
    const uint64_t key = t.keys[i], next = next_use[i];
    auto it = cached.find(key);
    if (it != cached.end()) {
      ++hits;
      it->second = next;
      furthest.push({next, key});
      continue;
    }
    if (cached.size() >= slots) {
      while (true) {
        auto [n, k] = furthest.top();
        auto c = cached.find(k);
        if (c != cached.end() && c->second == n) break;
        furthest.pop();
      }
      if (furthest.top().first <= next) continue;  // this row is needed last: bypass
      cached.erase(furthest.top().second);
      furthest.pop();
    }
    cached.emplace(key, next);
    furthest.push({next, key});
  }
  return HitRate(hits, t.keys.size());
}

// engram-memory's DRAM budget split (table_set.cc): resident in layer order while whole tables
// fit, then shares of the rest in proportion to size.
std::vector<uint64_t> DramBudgets(const Trace& t, uint32_t row_bytes, uint64_t budget) {
  std::vector<int> order(t.layer_rows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return t.layer_ids[a] < t.layer_ids[b]; });
  std::vector<uint64_t> out(order.size(), 0);
  uint64_t remaining = budget, rest = 0;
  for (int li : order) {
    const uint64_t size = ResidentGeometry(t.layer_rows[li], row_bytes).size_bytes;
    if (size <= remaining) {
      out[li] = size;
      remaining -= size;
    } else {
      rest += size;
    }
  }
  for (int li : order) {
    if (out[li] > 0) continue;
    const double share =
        static_cast<double>(ResidentGeometry(t.layer_rows[li], row_bytes).size_bytes) /
        static_cast<double>(rest);
    out[li] = static_cast<uint64_t>(share * static_cast<double>(remaining));
  }
  return out;
}

// One table's DRAM arena: resident, a set-associative cache with the promoter's admission
// (TieredStore::Offer), or nothing (a share too small for one set).
class DramSim {
 public:
  DramSim(uint64_t rows, uint32_t row_bytes, uint64_t budget, const MrcOptions& o) {
    if (budget >= ResidentGeometry(rows, row_bytes).size_bytes) {
      resident_ = true;
      capacity_ = rows;
      return;
    }
    const ArenaGeometry g = CacheGeometry(rows, row_bytes, o.dram_ways, budget);
    sets_ = g.sets;
    ways_ = g.ways;
    capacity_ = g.slots;
    if (sets_ == 0) return;
    slots_.assign(sets_ * ways_, kEmpty);
    AccessStats::Options so;
    so.sketch_width = capacity_;
    so.tracked_rows = o.tracked_rows;
    stats_ = std::make_unique<AccessStats>(so);
  }
  uint64_t capacity() const { return capacity_; }

  // One lookup batch: hits against the arena as it is, then the promoter's work.
  uint64_t Batch(absl::Span<const uint64_t> rows) {
    if (resident_) return rows.size();
    if (sets_ == 0) return 0;
    uint64_t hits = 0;
    misses_.clear();
    for (uint64_t r : rows) {
      if (Holds(r)) {
        ++hits;
      } else {
        misses_.push_back(r);
      }
    }
    for (uint64_t r : rows) stats_->Record(r);
    for (uint64_t r : misses_) Offer(r);
    return hits;
  }

 private:
  bool Holds(uint64_t row) const {
    const uint64_t set = ArenaSetOf(row, sets_);
    for (uint32_t w = 0; w < ways_; ++w) {
      if (slots_[set * ways_ + w] == row) return true;
    }
    return false;
  }
  void Offer(uint64_t row) {
    uint64_t* set = &slots_[ArenaSetOf(row, sets_) * ways_];
    int victim = -1;
    uint32_t victim_count = UINT32_MAX;
    for (uint32_t w = 0; w < ways_; ++w) {
      if (set[w] == row) return;
      if (set[w] == kEmpty) {
        victim = static_cast<int>(w);
        victim_count = 0;
        break;
      }
      const uint32_t c = stats_->Estimate(set[w]);
      if (c < victim_count) {
        victim = static_cast<int>(w);
        victim_count = c;
      }
    }
    if (victim_count > 0 && stats_->Estimate(row) <= victim_count) return;
    set[victim] = row;
  }

  bool resident_ = false;
  uint64_t sets_ = 0;
  uint32_t ways_ = 0;
  uint64_t capacity_ = 0;
  std::vector<uint64_t> slots_;
  std::unique_ptr<AccessStats> stats_;
  std::vector<uint64_t> misses_;
};

// Lookups of the `n` most read rows of `sorted_counts` (descending).
uint64_t TopHits(const std::vector<uint64_t>& prefix, uint64_t n) {
  return prefix.empty() ? 0 : prefix[std::min<uint64_t>(n, prefix.size() - 1)];
}

std::string XmlEscape(absl::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<MrcSize> ParseMrcSize(absl::string_view text) {
  std::string s = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("size \"", text, "\": ", why));
  };
  MrcSize size;
  if (!s.empty() && s.back() == '%') {
    double pct = 0;
    if (!absl::SimpleAtod(s.substr(0, s.size() - 1), &pct) || !(pct > 0) || pct > 100) {
      return bad("a share must be in (0%, 100%]");
    }
    size.fraction = pct / 100;
    return size;
  }
  for (absl::string_view suffix : {"IB", "B"}) {
    if (s.size() > suffix.size() && absl::EndsWith(s, suffix)) {
      s.resize(s.size() - suffix.size());
      break;
    }
  }
  uint64_t unit = 1;
  if (!s.empty() && (s.back() == 'K' || s.back() == 'M' || s.back() == 'G' || s.back() == 'T')) {
    unit = uint64_t{1} << (10 * (std::string("KMGT").find(s.back()) + 1));
    s.pop_back();
  }
  double value = 0;
  if (!absl::SimpleAtod(s, &value) || !(value > 0) || value * unit > 1e18) {
    return bad("expected a share (5%) or bytes (4096, 64K, 64M, 2G)");
  }
  size.bytes = static_cast<uint64_t>(value * static_cast<double>(unit));
  return size;
}

namespace {

// The row size of the model's own tables when its directory carries them (plain or the FP8 pair),
// else bf16's.
uint32_t DefaultRowBytes(const std::string& model_dir, const EngramConfig& config) {
  uint32_t bytes = static_cast<uint32_t>(2 * config.head_dim);
  absl::StatusOr<std::unique_ptr<SafetensorsDir>> dir = SafetensorsDir::Open(model_dir);
  if (!dir.ok() || config.layer_ids.empty()) return bytes;
  absl::StatusOr<ModelTable> t =
      FindModelTable(**dir, model_dir, config.layer_ids[0], config.head_dim);
  if (!t.ok()) return bytes;
  absl::StatusOr<size_t> b = RowBytes(t->dtype, config.head_dim);
  return b.ok() ? static_cast<uint32_t>(*b) : bytes;
}

}  // namespace

absl::StatusOr<MrcResult> ComputeMrc(const MrcOptions& options) {
  if (options.sizes.empty()) return absl::InvalidArgumentError("no cache sizes given");
  if (options.step_positions == 0) {
    return absl::InvalidArgumentError("step_positions must be > 0");
  }
  ENGRAM_ASSIGN_OR_RETURN(CorpusModel model, LoadCorpusModel(options.model_dir));
  const EngramHashConstants& hash = model.constants.hash;
  MrcOptions o = options;
  if (o.row_bytes == 0) o.row_bytes = DefaultRowBytes(o.model_dir, model.config);

  Trace t;
  t.layer_ids = hash.layer_ids;
  const GlobalRowIds ids(hash.rows_per_layer);
  t.bases = ids.bases();
  for (int64_t r : hash.rows_per_layer) t.layer_rows.push_back(static_cast<uint64_t>(r));
  const size_t columns = static_cast<size_t>(hash.columns());
  const int layers = hash.num_layers();
  t.step = uint64_t{o.step_positions} * columns * layers;

  MrcResult result;
  result.model = model.name;
  result.corpus = o.corpus_path;
  result.table_rows = ids.total_rows();
  result.row_bytes = o.row_bytes;
  std::vector<std::vector<int64_t>> rows(layers);
  ENGRAM_RETURN_IF_ERROR(ForEachCorpusDocument(
      model, o.corpus_path, o.max_bytes, [&](absl::Span<const int64_t> doc) -> absl::Status {
        result.tokens += doc.size();
        for (int li = 0; li < layers; ++li) {
          rows[li].resize(doc.size() * columns);
          ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, {}, doc, absl::MakeSpan(rows[li])));
        }
        for (size_t p = 0; p < doc.size(); ++p) {
          for (int li = 0; li < layers; ++li) {
            for (size_t c = 0; c < columns; ++c) {
              t.keys.push_back(ids.Key(li, static_cast<uint64_t>(rows[li][p * columns + c])));
            }
          }
        }
        return absl::OkStatus();
      }));
  if (t.keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("corpus ", o.corpus_path, " has no text"));
  }
  result.lookups = t.keys.size();

  // Counts for the static oracles: all layers together (HBM) and per table (DRAM), as prefix sums
  // of the counts sorted hottest first.
  absl::flat_hash_map<uint64_t, uint64_t> counts;
  for (uint64_t k : t.keys) ++counts[k];
  result.distinct_rows = counts.size();
  std::vector<std::vector<uint64_t>> by_layer(layers);
  std::vector<uint64_t> all;
  all.reserve(counts.size());
  for (const auto& [k, n] : counts) {
    all.push_back(n);
    by_layer[t.LayerOf(k)].push_back(n);
  }
  auto prefix_sums = [](std::vector<uint64_t> v) {
    std::sort(v.begin(), v.end(), std::greater<>());
    std::vector<uint64_t> p(v.size() + 1, 0);
    for (size_t i = 0; i < v.size(); ++i) p[i + 1] = p[i] + v[i];
    return p;
  };
  const std::vector<uint64_t> all_prefix = prefix_sums(std::move(all));
  std::vector<std::vector<uint64_t>> layer_prefix;
  for (auto& v : by_layer) layer_prefix.push_back(prefix_sums(std::move(v)));
  std::vector<uint64_t> next_use;
  if (o.belady) {
    next_use.assign(t.keys.size(), t.keys.size());
    absl::flat_hash_map<uint64_t, uint64_t> seen;
    for (size_t i = t.keys.size(); i-- > 0;) {
      auto [it, inserted] = seen.try_emplace(t.keys[i], i);
      if (!inserted) {
        next_use[i] = it->second;
        it->second = i;
      }
    }
  }

  uint64_t resident_bytes = 0;
  for (uint64_t r : t.layer_rows) resident_bytes += ResidentGeometry(r, o.row_bytes).size_bytes;
  const double total_rows = static_cast<double>(result.table_rows);

  // ---- HBM ----
  std::vector<MrcPoint> hbm_policy, hbm_static, hbm_belady, dram_policy, dram_static;
  for (const MrcSize& size : o.sizes) {
    HotCacheGeometry g;
    if (size.fraction > 0) {
      g = HotCacheGeometryForSlots(
          static_cast<uint64_t>(std::ceil(size.fraction * total_rows - 1e-9)), o.row_bytes);
    } else {
      ENGRAM_ASSIGN_OR_RETURN(g, HotCacheGeometryFor(size.bytes, o.row_bytes));
    }
    MrcPoint p;
    p.tier = "hbm";
    p.rows = std::min<uint64_t>(g.slots, result.table_rows);
    p.size_fraction = static_cast<double>(p.rows) / total_rows;
    p.size_bytes = size.fraction > 0 ? g.pool_bytes + g.map_bytes : size.bytes;
    p.policy = "tinylfu";
    p.hit_rate = SimulateHotRowCache(t, p.rows, o);
    hbm_policy.push_back(p);
    p.policy = "static";
    p.hit_rate = HitRate(TopHits(all_prefix, p.rows), result.lookups);
    hbm_static.push_back(p);
    if (o.belady) {
      p.policy = "belady";
      p.hit_rate = SimulateBelady(t, next_use, p.rows);
      hbm_belady.push_back(p);
    }
  }

  // ---- DRAM ----
  for (const MrcSize& size : o.sizes) {
    // A share is the budget that holds that share of every table's rows: page-aligned header,
    // slot headers and rows of the cache layout (arena.h), or the resident size at 100%.
    uint64_t budget = size.bytes;
    if (size.fraction >= 1) {
      budget = resident_bytes;
    } else if (size.fraction > 0) {
      budget = 0;
      for (uint64_t rows : t.layer_rows) {
        const uint64_t sets = static_cast<uint64_t>(
            std::ceil(size.fraction * static_cast<double>(rows) / o.dram_ways));
        budget += 3 * 4096 + sets * o.dram_ways * (sizeof(SlotHeader) + o.row_bytes);
      }
    }
    const std::vector<uint64_t> budgets = DramBudgets(t, o.row_bytes, budget);
    std::vector<std::unique_ptr<DramSim>> sims;
    uint64_t capacity = 0, static_hits = 0;
    for (int li = 0; li < layers; ++li) {
      sims.push_back(std::make_unique<DramSim>(t.layer_rows[li], o.row_bytes, budgets[li], o));
      capacity += sims.back()->capacity();
      static_hits += TopHits(layer_prefix[li], sims.back()->capacity());
    }
    uint64_t hits = 0;
    std::vector<std::vector<uint64_t>> batch(layers);
    for (size_t i = 0; i < t.keys.size(); i += t.step) {
      for (auto& b : batch) b.clear();
      const size_t end = std::min<size_t>(t.keys.size(), i + t.step);
      for (size_t j = i; j < end; ++j) {
        const int li = t.LayerOf(t.keys[j]);
        batch[li].push_back(t.keys[j] - t.bases[li]);
      }
      for (int li = 0; li < layers; ++li) hits += sims[li]->Batch(batch[li]);
    }
    MrcPoint p;
    p.tier = "dram";
    p.rows = capacity;
    p.size_fraction = static_cast<double>(capacity) / total_rows;
    p.size_bytes = budget;
    p.policy = "tier";
    p.hit_rate = HitRate(hits, result.lookups);
    dram_policy.push_back(p);
    p.policy = "static";
    p.hit_rate = HitRate(static_hits, result.lookups);
    dram_static.push_back(p);
  }
  for (auto* v : {&hbm_policy, &hbm_static, &hbm_belady, &dram_policy, &dram_static}) {
    result.points.insert(result.points.end(), v->begin(), v->end());
  }
  return result;
}

std::string MrcCsv(const MrcResult& r) {
  std::string out = "tier,policy,size_percent,size_bytes,rows,hit_rate\n";
  for (const MrcPoint& p : r.points) {
    absl::StrAppendFormat(&out, "%s,%s,%.4f,%u,%u,%.6f\n", p.tier, p.policy, 100 * p.size_fraction,
                          p.size_bytes, p.rows, p.hit_rate);
  }
  return out;
}

std::string MrcSvg(const MrcResult& r) {
  constexpr double kW = 720, kH = 440, kLeft = 70, kRight = 200, kTop = 50, kBottom = 60;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  double min_x = 1;
  for (const MrcPoint& p : r.points) {
    if (p.size_fraction > 0) min_x = std::min(min_x, p.size_fraction);
  }
  const double lo = std::floor(std::log10(min_x * 100)), hi = 2;  // decades of percent
  auto x = [&](double fraction) {
    const double v = std::log10(std::max(fraction * 100, std::pow(10.0, lo)));
    return kLeft + (v - lo) / (hi - lo) * pw;
  };
  auto y = [&](double rate) { return kTop + (1 - rate) * ph; };
  std::string s = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" "
      "fill=\"white\"/>\n",
      kW, kH);
  absl::StrAppendFormat(&s,
                        "<text x=\"%.0f\" y=\"22\" font-size=\"14\">Engram row hit rate vs cache "
                        "size: %s, %u tokens, %u lookups</text>\n",
                        kLeft, XmlEscape(r.model), r.tokens, r.lookups);
  for (int pct = 0; pct <= 100; pct += 20) {
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n",
                          kLeft, y(pct / 100.0), kLeft + pw, y(pct / 100.0), kLeft - 6,
                          y(pct / 100.0) + 4, pct);
  }
  for (double d = lo; d <= hi; d += 1) {
    const double v = std::pow(10.0, d);
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g%%</text>\n",
                          x(v / 100), kTop, x(v / 100), kTop + ph, x(v / 100), kTop + ph + 18, v);
  }
  absl::StrAppendFormat(&s,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                        "stroke=\"black\"/>\n<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">"
                        "cache size (%% of the tables' %u rows of %u bytes)</text>\n<text "
                        "transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
                        "hit rate</text>\n",
                        kLeft, kTop, pw, ph, kLeft + pw / 2, kH - 15, r.table_rows, r.row_bytes,
                        kTop + ph / 2);
  struct Style {
    const char* tier;
    const char* policy;
    const char* color;
    const char* dash;
    const char* label;
  };
  const Style styles[] = {
      {"hbm", "tinylfu", "#1f77b4", "", "HBM: HotRowCache"},
      {"hbm", "static", "#1f77b4", "6,4", "HBM: static oracle"},
      {"hbm", "belady", "#1f77b4", "2,3", "HBM: Belady (MIN)"},
      {"dram", "tier", "#d62728", "", "DRAM: tier cache"},
      {"dram", "static", "#d62728", "6,4", "DRAM: static oracle"},
  };
  int legend = 0;
  for (const Style& st : styles) {
    std::string points;
    for (const MrcPoint& p : r.points) {
      if (p.tier == st.tier && p.policy == st.policy) {
        absl::StrAppendFormat(&points, "%.1f,%.1f ", x(p.size_fraction), y(p.hit_rate));
      }
    }
    if (points.empty()) continue;
    absl::StrAppendFormat(&s,
                          "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                          "stroke-dasharray=\"%s\" points=\"%s\"/>\n",
                          st.color, st.dash, points);
    const double ly = kTop + 10 + 20 * legend++;
    absl::StrAppendFormat(&s,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"2\" stroke-dasharray=\"%s\"/><text x=\"%.1f\" "
                          "y=\"%.1f\">%s</text>\n",
                          kLeft + pw + 12, ly, kLeft + pw + 40, ly, st.color, st.dash,
                          kLeft + pw + 46, ly + 4, st.label);
  }
  s += "</svg>\n";
  return s;
}

}  // namespace engram
