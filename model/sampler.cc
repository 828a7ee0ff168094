#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/splitmix64.h"

namespace engram {
namespace {

// NaN never wins and never breaks the sort's ordering.
inline float Key(float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (p.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0, got ", p.top_k));
  if (!(p.top_p > 0 && p.top_p <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  return absl::OkStatus();
}

uint32_t ArgMax(absl::Span<const float> logits) {
  uint32_t best = 0;
  float best_value = Key(logits.empty() ? 0.0f : logits[0]);
  for (size_t i = 1; i < logits.size(); ++i) {
    if (Key(logits[i]) > best_value) {
      best_value = Key(logits[i]);
      best = static_cast<uint32_t>(i);
    }
  }
  return best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), state_(params.seed) {}

double Sampler::NextUniform() { return UnitInterval(SplitMix64Next(&state_)); }

uint32_t Sampler::Sample(absl::Span<const float> logits) {
  if (params_.temperature <= 0 || logits.size() <= 1) return ArgMax(logits);
  const double u = NextUniform();  // drawn first: one draw per call, whatever the filters keep
  return SampleWithUniform(logits, params_, u, &scratch_);
}

uint32_t SampleWithUniform(absl::Span<const float> logits, const SamplingParams& params, double u,
                           SampleScratch* scratch) {
  if (params.temperature <= 0 || logits.size() <= 1) return ArgMax(logits);
  const size_t V = logits.size();
  std::vector<uint32_t>& order = scratch->order;
  std::vector<double>& probs = scratch->probs;

  // Candidates: every id, or the top_k by descending logit (ties: lower id first). order[0,
  // sorted) is in descending order.
  order.resize(V);
  std::iota(order.begin(), order.end(), 0u);
  auto before = [&](uint32_t a, uint32_t b) {
    float ka = Key(logits[a]), kb = Key(logits[b]);
    return ka > kb || (ka == kb && a < b);
  };
  size_t n = V, sorted = 0;
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < V) {
    n = sorted = params.top_k;
    std::partial_sort(order.begin(), order.begin() + n, order.end(), before);
  }

  // Softmax weights of logits / temperature over the candidates, in double; probs[i] belongs to
  // order[i].
  float max_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, Key(logits[order[i]]));
  if (!std::isfinite(max_logit)) return ArgMax(logits);
  auto weight = [&](uint32_t id) {
    return std::exp((double(Key(logits[id])) - max_logit) / params.temperature);
  };
  probs.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += probs[i] = weight(order[i]);

  // Nucleus: the shortest prefix of the descending order whose mass reaches top_p (at least one
  // token). Only as much of the order as the nucleus reaches is sorted, in growing blocks: a peaked
  // distribution needs a few hundred of the vocabulary, and a full sort per token cost ~6 ms at
  // 50k ids.
  if (params.top_p < 1.0f) {
    const double target = double(params.top_p) * sum;
    double cumulative = 0;
    size_t nucleus = n;
    for (size_t i = 0; i < n; ++i) {
      if (i == sorted) {
        const size_t next = std::min(n, std::max<size_t>(2 * sorted, 256));
        auto first = order.begin() + sorted, last = order.begin() + next;
        if (next < n) std::nth_element(first, last, order.begin() + n, before);
        std::sort(first, last, before);
        for (size_t k = sorted; k < next; ++k) probs[k] = weight(order[k]);
        sorted = next;
      }
      cumulative += probs[i];
      if (cumulative >= target) {
        nucleus = i + 1;
        break;
      }
    }
    n = nucleus;
    sum = 0;
    for (size_t i = 0; i < n; ++i) sum += probs[i];
  }

  double threshold = u * sum, cumulative = 0;
  for (size_t i = 0; i < n; ++i) {
    cumulative += probs[i];
    if (threshold < cumulative) return order[i];
  }
  return order[n - 1];  // rounding at the very top of the range
}

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kContext:
      return "context";
    case FinishReason::kAborted:
      return "aborted";
  }
  return "unknown";
}

FinishReason CheckStopToken(const StopConditions& stop, uint32_t token, int generated) {
  auto contains = [](const std::vector<uint32_t>& ids, uint32_t id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  if (!stop.ignore_eos && contains(stop.eos_token_ids, token)) return FinishReason::kEos;
  if (contains(stop.stop_token_ids, token)) return FinishReason::kStop;
  if (generated >= stop.max_tokens) return FinishReason::kLength;
  return FinishReason::kNone;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (auto& s : stop_strings) {
    if (s.empty()) continue;  // an empty stop string would match before any text
    longest_ = std::max(longest_, s.size());
    stops_.push_back(std::move(s));
  }
}

std::string StopStringMatcher::Push(absl::string_view piece, bool* stopped) {
  if (stopped_) {
    *stopped = true;
    return "";
  }
  pending_.append(piece.data(), piece.size());
  // The earliest complete match wins.
  size_t match = std::string::npos;
  for (const auto& s : stops_) match = std::min(match, pending_.find(s));
  if (match != std::string::npos) {
    stopped_ = true;
    *stopped = true;
    std::string out = pending_.substr(0, match);
    pending_.clear();
    return out;
  }
  *stopped = false;
  // Hold back the longest tail that is a proper prefix of some stop string. A stop string starts
  // with a UTF-8 lead byte, so the cut never splits a character.
  size_t hold = 0;
  for (const auto& s : stops_) {
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k) {
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace engram
