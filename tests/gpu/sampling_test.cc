// LaunchSample against SampleWithUniform of model/sampler.h (the CPU sampler with the uniform
// draw passed in), over batches that mix every kind of row: greedy, temperature only, top_k
// (including 1, V - 1, V and more than V), top_p, both, and a near-zero temperature; logits that
// are random, peaked, full of ties, sprinkled with NaN and -inf, all -inf, all NaN, holding +inf,
// or mixing -0 and +0; V = 1, 19, 50257, 151936, 262144 and a batch of 1024 rows.
//
// Exactness: greedy rows (and rows the CPU resolves by ArgMax) must match exactly. A sampled row
// sums its weights in f32 on the GPU and in double on the CPU, so a uniform within rounding of a
// boundary between two candidates may pick the neighbour (sampling.cuh says so). For each sampled
// row the test asks the CPU for its choice with the uniform and top_p moved by a relative 1e-4 both
// ways (the pick only moves forward along the candidate order as either grows): when both give the
// same token, which is the usual case, the GPU must return exactly it; otherwise the GPU's token
// must lie between the two in the candidate order. f32 sums of up to 262144 weights differ from
// double by ~1e-6 relative, 100 times less than that margin.
#include "model/kernels/sampling.cuh"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/cuda/device_buffer.h"
#include "model/sampler.h"
#include "tests/gpu/cuda_ok.h"
#include "tests/gpu/device_expect_near.h"

namespace engram::kernels {
namespace {

using ::engram::testing::ToDevice;

constexpr double kMargin = 1e-4;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

constexpr int kLogitKinds = 9;

std::vector<float> MakeLogits(int kind, int V, std::mt19937* rng) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> v(V);
  auto any_id = [&] { return static_cast<int>((*rng)() % V); };
  switch (kind) {
    case 0:  // random
      for (auto& x : v) x = normal(*rng);
      break;
    case 1:  // peaked
      for (auto& x : v) x = normal(*rng) * 0.5f;
      v[any_id()] = 12.0f;
      break;
    case 2:  // few distinct values: many ties
      for (auto& x : v) x = std::round(normal(*rng) * 0.75f);
      break;
    case 3:  // NaN and -inf sprinkled
      for (auto& x : v) {
        const uint32_t r = (*rng)() % 10;
        x = r == 0 ? kNaN : (r == 1 ? -kInf : normal(*rng));
      }
      break;
    case 4:  // all equal
      std::fill(v.begin(), v.end(), 0.25f);
      break;
    case 5:  // nothing but -inf
      std::fill(v.begin(), v.end(), -kInf);
      break;
    case 6:  // nothing but NaN
      std::fill(v.begin(), v.end(), kNaN);
      break;
    case 7:  // +inf twice: the lower id wins
      for (auto& x : v) x = normal(*rng);
      if (V > 2) {
        const int a = any_id(), b = any_id();
        v[a] = kInf;
        v[b] = kInf;
      }
      break;
    default:  // -0 and +0 tie with each other, below them only negatives
      for (auto& x : v) {
        const uint32_t r = (*rng)() % 4;
        x = r == 0 ? -0.0f : (r == 1 ? 0.0f : -1.0f - static_cast<float>(r));
      }
      break;
  }
  return v;
}

constexpr int kParamKinds = 12;

SamplingParams MakeParams(int which, int V) {
  SamplingParams p;
  switch (which) {
    case 0:  // greedy
      break;
    case 1:
      p.temperature = 1.0f;
      break;
    case 2:
      p.temperature = 0.7f;
      p.top_k = 1;
      break;
    case 3:
      p.temperature = 1.3f;
      p.top_k = 40;
      break;
    case 4:
      p.temperature = 1.0f;
      p.top_k = std::max(V - 1, 0);
      break;
    case 5:  // top_k = V: no cut and no sort (id order)
      p.temperature = 0.9f;
      p.top_k = V;
      break;
    case 6:
      p.temperature = 1.0f;
      p.top_k = V + 5;
      break;
    case 7:
      p.temperature = 0.8f;
      p.top_p = 0.9f;
      break;
    case 8:
      p.temperature = 1.0f;
      p.top_p = 0.5f;
      break;
    case 9:
      p.temperature = 1.1f;
      p.top_k = 50;
      p.top_p = 0.8f;
      break;
    case 10:
      p.temperature = 2.0f;
      p.top_p = 0.999f;
      break;
    default:
      p.temperature = 1e-3f;
      p.top_p = 0.95f;
      break;
  }
  return p;
}

bool Sorted(const SamplingParams& p, int V) {
  return p.temperature > 0 && V > 1 && ((p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f);
}

bool Greedy(const SamplingParams& p, int V) { return !(p.temperature > 0) || V <= 1; }

// Position of each id in the candidate order: id order, or (logit desc with NaN as -inf, id asc).
std::vector<int> Ranks(const std::vector<float>& logits, bool sorted) {
  const int V = static_cast<int>(logits.size());
  std::vector<int> order(V), rank(V);
  std::iota(order.begin(), order.end(), 0);
  if (sorted) {
    auto key = [&](int id) { return std::isnan(logits[id]) ? -kInf : logits[id]; };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
  }
  for (int i = 0; i < V; ++i) rank[order[i]] = i;
  return rank;
}

struct Batch {
  int V = 0;
  std::vector<float> logits;  // [B, V]
  std::vector<SamplingParams> params;
  std::vector<float> uniforms;
  int B() const { return static_cast<int>(params.size()); }
  bool AnySorted() const {
    for (const auto& p : params) {
      if (Sorted(p, V)) return true;
    }
    return false;
  }
};

Batch MakeBatch(int V, int B, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.001f, 0.999f);
  Batch batch;
  batch.V = V;
  for (int b = 0; b < B; ++b) {
    const int which = b % kParamKinds;
    const int kind = (b / kParamKinds * 5 + b) % kLogitKinds;
    const std::vector<float> row = MakeLogits(kind, V, &rng);
    batch.logits.insert(batch.logits.end(), row.begin(), row.end());
    batch.params.push_back(MakeParams(which, V));
    batch.uniforms.push_back(uniform(rng));
  }
  return batch;
}

// Runs LaunchSample; the workspace starts filled with 0xff bytes (NaN keys, -1 ids) so that a row
// reading something it did not write shows up.
std::vector<int32_t> RunOnGpu(const Batch& batch, bool any_sorted) {
  std::vector<SampleParams> params(batch.B());
  for (int b = 0; b < batch.B(); ++b) {
    params[b].temperature = batch.params[b].temperature;
    params[b].top_k = batch.params[b].top_k;
    params[b].top_p = batch.params[b].top_p;
    params[b].uniform = batch.uniforms[b];
  }
  DeviceBuffer<float> d_logits = ToDevice(batch.logits);
  DeviceBuffer<SampleParams> d_params = ToDevice(params);
  DeviceBuffer<int32_t> d_tokens = ToDevice(std::vector<int32_t>(batch.B(), -7));
  const size_t bytes = SampleWorkspaceBytes(batch.B(), batch.V);
  EXPECT_GT(bytes, 0u);
  absl::StatusOr<DeviceBuffer<uint8_t>> workspace = DeviceBuffer<uint8_t>::Create(bytes);
  EXPECT_TRUE(workspace.ok()) << workspace.status();
  if (!workspace.ok()) return {};
  EXPECT_EQ(cudaMemset(workspace->get(), 0xff, bytes), cudaSuccess);

  SampleArgs args;
  args.logits = d_logits.get();
  args.params = d_params.get();
  args.B = batch.B();
  args.V = batch.V;
  args.tokens = d_tokens.get();
  args.any_sorted = any_sorted;
  args.workspace = workspace->get();
  const absl::Status st = LaunchSample(args, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  absl::StatusOr<std::vector<int32_t>> tokens = d_tokens.Download();
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  return tokens.ok() ? *tokens : std::vector<int32_t>();
}

struct Counts {
  int greedy = 0;   // greedy rows: exact
  int exact = 0;    // sampled rows whose CPU choice is stable within the margin: exact
  int bracket = 0;  // sampled rows near a boundary: between the two neighbouring choices
};

Counts CheckBatch(const Batch& batch, const std::vector<int32_t>& got) {
  Counts counts;
  const int V = batch.V;
  EXPECT_EQ(got.size(), static_cast<size_t>(batch.B()));
  if (got.size() != static_cast<size_t>(batch.B())) return counts;
  SampleScratch scratch;
  for (int b = 0; b < batch.B(); ++b) {
    const absl::Span<const float> row(batch.logits.data() + static_cast<size_t>(b) * V, V);
    const SamplingParams& p = batch.params[b];
    const double u = batch.uniforms[b];
    const std::string what = absl::StrCat("row ", b, " (V ", V, ", temperature ", p.temperature,
                                          ", top_k ", p.top_k, ", top_p ", p.top_p, ", u ", u, ")");
    const uint32_t want = SampleWithUniform(row, p, u, &scratch);
    if (got[b] < 0 || got[b] >= V) {
      ADD_FAILURE() << what << ": token " << got[b] << " is not an id";
      continue;
    }
    if (Greedy(p, V)) {
      ++counts.greedy;
      EXPECT_EQ(static_cast<uint32_t>(got[b]), want) << what;
      continue;
    }
    SamplingParams lo_p = p, hi_p = p;
    if (p.top_p < 1.0f) {
      lo_p.top_p = static_cast<float>(p.top_p * (1 - kMargin));
      hi_p.top_p =
          std::min(static_cast<float>(p.top_p * (1 + kMargin)), std::nextafter(1.0f, 0.0f));
    }
    const uint32_t lo = SampleWithUniform(row, lo_p, std::max(0.0, u - kMargin), &scratch);
    const uint32_t hi = SampleWithUniform(row, hi_p, u + kMargin, &scratch);
    if (lo == hi) {
      ++counts.exact;
      EXPECT_EQ(static_cast<uint32_t>(got[b]), want) << what;
    } else {
      ++counts.bracket;
      const std::vector<int> rank = Ranks(std::vector<float>(row.begin(), row.end()), Sorted(p, V));
      EXPECT_LE(rank[lo], rank[got[b]])
          << what << ": got " << got[b] << ", lo " << lo << ", hi " << hi;
      EXPECT_LE(rank[got[b]], rank[hi])
          << what << ": got " << got[b] << ", lo " << lo << ", hi " << hi;
    }
  }
  return counts;
}

class SampleTest : public ::testing::TestWithParam<int> {};

TEST_P(SampleTest, MatchesSampleWithUniform) {
  const int V = GetParam();
  const int B = V == 1 ? 12 : (V > 200000 ? 24 : 60);
  const Batch batch = MakeBatch(V, B, static_cast<uint32_t>(V) * 2654435761u);
  const std::vector<int32_t> got = RunOnGpu(batch, batch.AnySorted());
  const Counts counts = CheckBatch(batch, got);
  std::printf("V %d: %d greedy rows, %d sampled rows exact, %d within the margin\n", V,
              counts.greedy, counts.exact, counts.bracket);
  // Most sampled rows are far from a boundary and compared exactly. (A flat distribution over 150k
  // ids has a boundary every ~1e-5 of the mass, so those rows are bracketed instead.)
  EXPECT_GE(counts.exact, (counts.exact + counts.bracket) / 3);
}

INSTANTIATE_TEST_SUITE_P(Vocab, SampleTest, ::testing::Values(1, 19, 50257, 151936, 262144));

TEST(SampleBatchTest, ThousandRowsOfNineteen) {
  const Batch batch = MakeBatch(19, 1024, 12345);
  const Counts counts = CheckBatch(batch, RunOnGpu(batch, batch.AnySorted()));
  EXPECT_GE(counts.exact, 9 * (counts.exact + counts.bracket) / 10);
}

TEST(SampleBatchTest, GreedyAndIdOrderRowsDoNotDependOnTheSort) {
  const Batch batch = MakeBatch(50257, 48, 777);
  ASSERT_TRUE(batch.AnySorted());
  const std::vector<int32_t> sorted = RunOnGpu(batch, true);
  const std::vector<int32_t> unsorted = RunOnGpu(batch, false);
  ASSERT_EQ(sorted.size(), unsorted.size());
  for (int b = 0; b < batch.B(); ++b) {
    if (Sorted(batch.params[b], batch.V)) {
      // The caller's flag was wrong for this row: flagged with -1, not sampled differently.
      EXPECT_EQ(unsorted[b], -1) << "row " << b;
    } else {
      EXPECT_EQ(sorted[b], unsorted[b]) << "row " << b;
    }
  }
}

TEST(SampleArgsTest, RejectsBadArguments) {
  SampleArgs args;
  EXPECT_TRUE(LaunchSample(args, nullptr).ok());  // B = 0: no-op
  args.B = 1;
  args.V = 10;
  EXPECT_EQ(LaunchSample(args, nullptr).code(), absl::StatusCode::kInvalidArgument);  // nulls
  args.V = 0;
  EXPECT_EQ(LaunchSample(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.B = 1 << 20;
  args.V = 1 << 12;  // B * V overflows int
  EXPECT_EQ(LaunchSample(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SampleWorkspaceBytes(0, 10), 0u);
  EXPECT_GE(SampleWorkspaceBytes(2, 10), 2u * 10 * 16);
}

}  // namespace
}  // namespace engram::kernels
