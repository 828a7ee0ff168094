// LaunchDecodeAttention and LaunchPrefillAttention against PagedAttentionReference (Attention of
// model/cpu_ops.h over a KvCache laid out from the same paged pools), with awkward shapes: batches
// of 1, 19 and 111; context lengths 1, 2, 17, 100 and over 1000, most not a multiple of the block
// size; GQA ratios 1, 3, 4, 8, 16 and 20 (two head tiles) with odd KV head counts; head_dim 64 and
// 128; block_tokens 16, 32 and 64; one and several splits (with empty ones); prefill chunks of 1,
// 19, 111 and 300 rows over cached prefixes of 0 and > 0 tokens. Block tables are shuffled and
// never use block 0; everything a kernel must not read (block 0, the tail of a partly filled block,
// table entries past the last block) holds NaN or -1, and the output starts as NaN, so a stray read
// or a missed write fails the comparison.
#include "model/kernels/attention.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "model/cuda/device_buffer.h"
#include "model/kernels/attention_reference.h"
#include "model/thread_pool.h"
#include "tests/gpu/cuda_ok.h"
#include "tests/gpu/device_expect_near.h"

namespace engram::kernels {
namespace {

using ::engram::testing::DownloadAsFloat;
using ::engram::testing::ExpectNearDevice;

// Tolerance. Inputs are bf16 and exact in f32, and scores and sums are accumulated in f32, so the
// kernels differ from the f32 reference by (a) P rounded to bf16 before P.V: each weight is off by
// at most 2^-9 relative, so the output moves by at most 2^-9 * max|v| = 0.002 (|v| <= 1 here);
// (b) the bf16 output: 2^-9 relative; (c) f32 summation order, ~1e-6. atol 1e-2 + rtol 1e-2 is
// about twice the worst case of (a) + (b), yet far below what one wrong, missing or extra position
// changes (the q scales below make some heads' softmax peaked, so positions matter individually).
constexpr double kAtol = 1e-2;
constexpr double kRtol = 1e-2;

constexpr uint16_t kBf16Nan = 0x7fc0;

ThreadPool* ReferencePool() {
  static ThreadPool* pool =
      new ThreadPool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

// A host-side paged attention problem: random pools, shuffled block tables, q rows.
struct Problem {
  AttentionShape shape;
  std::vector<int32_t> q_offsets;     // [items + 1]
  std::vector<int32_t> context_lens;  // [items]
  int max_blocks = 0;
  std::vector<int32_t> tables;  // [items, max_blocks]
  std::vector<uint16_t> k_pool, v_pool, q;
  int rows() const { return q_offsets.back(); }
};

AttentionShape Shape(int nq, int nkv, int d, int block_tokens) {
  AttentionShape s;
  s.num_heads = nq;
  s.num_kv_heads = nkv;
  s.head_dim = d;
  s.block_tokens = block_tokens;
  s.scale = 1.0f / std::sqrt(static_cast<float>(d));  // the reference's scale
  return s;
}

// Item i has chunk_lens[i] query rows and context_lens[i] cached positions (its rows included).
Problem MakeProblem(const AttentionShape& shape, const std::vector<int>& chunk_lens,
                    const std::vector<int>& context_lens, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Problem p;
  p.shape = shape;
  const int items = static_cast<int>(context_lens.size());
  const int bt = shape.block_tokens;
  p.q_offsets.assign(1, 0);
  for (int n : chunk_lens) p.q_offsets.push_back(p.q_offsets.back() + n);
  p.context_lens.assign(context_lens.begin(), context_lens.end());

  std::vector<int> used(items);
  int total = 0;
  for (int i = 0; i < items; ++i) {
    used[i] = (context_lens[i] + bt - 1) / bt;
    total += used[i];
    p.max_blocks = std::max(p.max_blocks, used[i]);
  }
  p.max_blocks += 1;  // every table ends in at least one entry that must not be read
  const int num_blocks = 1 + total + 3;  // block 0 and a few spare blocks are never handed out
  std::vector<int32_t> ids(num_blocks - 1);
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.tables.assign(static_cast<size_t>(items) * p.max_blocks, -1);

  const int64_t d = shape.head_dim;
  const size_t pool_size = static_cast<size_t>(num_blocks) * shape.num_kv_heads * bt * d;
  p.k_pool.assign(pool_size, kBf16Nan);
  p.v_pool.assign(pool_size, kBf16Nan);
  int next = 0;
  for (int i = 0; i < items; ++i) {
    for (int b = 0; b < used[i]; ++b)
      p.tables[static_cast<size_t>(i) * p.max_blocks + b] = ids[next++];
    for (int pos = 0; pos < context_lens[i]; ++pos) {
      const int64_t block = p.tables[static_cast<size_t>(i) * p.max_blocks + pos / bt];
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const int64_t at = KvIndex(block, h, pos % bt, shape.num_kv_heads, bt, shape.head_dim);
        for (int64_t e = 0; e < d; ++e) {
          p.k_pool[at + e] = FloatToBf16Bits(uniform(rng));
          p.v_pool[at + e] = FloatToBf16Bits(uniform(rng));
        }
      }
    }
  }
  // q of head h is scaled by 2^(h % 4): heads with a flat softmax and heads with a peaked one.
  p.q.resize(static_cast<size_t>(p.rows()) * shape.num_heads * d);
  for (size_t e = 0; e < p.q.size(); ++e) {
    const int h = static_cast<int>((e / d) % shape.num_heads);
    p.q[e] = FloatToBf16Bits(uniform(rng) * static_cast<float>(1 << (h % 4)));
  }
  return p;
}

absl::StatusOr<std::vector<double>> Reference(const Problem& p) {
  PagedAttentionProblem r;
  r.k_pool = p.k_pool;
  r.v_pool = p.v_pool;
  r.block_tables = p.tables;
  r.max_blocks = p.max_blocks;
  r.q = p.q;
  r.q_offsets = p.q_offsets;
  r.context_lens = p.context_lens;
  r.num_heads = p.shape.num_heads;
  r.num_kv_heads = p.shape.num_kv_heads;
  r.head_dim = p.shape.head_dim;
  r.block_tokens = p.shape.block_tokens;
  return PagedAttentionReference(r, ReferencePool());
}

// The problem on the device; `out` starts as NaN so that a row the kernel misses fails.
struct DeviceProblem {
  DeviceBuffer<uint16_t> k_pool, v_pool, q, out;
  DeviceBuffer<int32_t> tables, q_offsets, context_lens;
  const bf16* k() const { return reinterpret_cast<const bf16*>(k_pool.get()); }
  const bf16* v() const { return reinterpret_cast<const bf16*>(v_pool.get()); }
  const bf16* qs() const { return reinterpret_cast<const bf16*>(q.get()); }
  bf16* outs() { return reinterpret_cast<bf16*>(out.get()); }
};

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer<T>> b = DeviceBuffer<T>::FromHost(absl::MakeConstSpan(host));
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : DeviceBuffer<T>();
}

DeviceProblem ToDevice(const Problem& p) {
  DeviceProblem d;
  d.k_pool = Upload(p.k_pool);
  d.v_pool = Upload(p.v_pool);
  d.q = Upload(p.q);
  d.tables = Upload(p.tables);
  d.q_offsets = Upload(p.q_offsets);
  d.context_lens = Upload(p.context_lens);
  absl::StatusOr<DeviceBuffer<uint16_t>> out = DeviceBuffer<uint16_t>::Create(p.q.size());
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) {
    d.out = std::move(*out);
    EXPECT_EQ(cudaMemset(d.out.get(), 0xff, d.out.bytes()), cudaSuccess);  // 0xffff: a NaN
  }
  return d;
}

int SmCount() {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 1;
  return sms;
}

// Runs decode on `dp` (one row per item) with `splits` (0: DecodeAttentionSplits); writes dp.out.
absl::Status RunDecode(const Problem& p, DeviceProblem& dp, int splits) {
  const int batch = static_cast<int>(p.context_lens.size());
  DecodeAttentionArgs args;
  args.q = dp.qs();
  args.out = dp.outs();
  args.k_cache = dp.k();
  args.v_cache = dp.v();
  args.block_tables = dp.tables.get();
  args.max_blocks = p.max_blocks;
  args.context_lens = dp.context_lens.get();
  args.batch = batch;
  args.shape = p.shape;
  args.num_splits = splits > 0 ? splits : DecodeAttentionSplits(batch, p.shape, SmCount());
  const size_t bytes = DecodeAttentionWorkspaceBytes(batch, p.shape, args.num_splits);
  absl::StatusOr<DeviceBuffer<float>> workspace =
      DeviceBuffer<float>::Create((bytes + sizeof(float) - 1) / sizeof(float));
  if (!workspace.ok()) return workspace.status();
  // NaN-filled, so that a partial result the merge reads but no split wrote shows.
  if (cudaMemset(workspace->get(), 0xff, workspace->bytes()) != cudaSuccess) {
    return absl::InternalError("cudaMemset");
  }
  args.workspace = workspace->get();
  absl::Status st = LaunchDecodeAttention(args, nullptr);
  if (!st.ok()) return st;
  return CudaStatus(cudaDeviceSynchronize(), "decode attention");
}

absl::Status RunPrefill(const Problem& p, DeviceProblem& dp) {
  PrefillAttentionArgs args;
  args.q = dp.qs();
  args.out = dp.outs();
  args.k_cache = dp.k();
  args.v_cache = dp.v();
  args.block_tables = dp.tables.get();
  args.max_blocks = p.max_blocks;
  args.q_offsets = dp.q_offsets.get();
  args.context_lens = dp.context_lens.get();
  args.items = static_cast<int>(p.context_lens.size());
  args.max_q_len = 0;
  for (size_t i = 0; i + 1 < p.q_offsets.size(); ++i) {
    args.max_q_len = std::max(args.max_q_len, p.q_offsets[i + 1] - p.q_offsets[i]);
  }
  args.shape = p.shape;
  absl::Status st = LaunchPrefillAttention(args, nullptr);
  if (!st.ok()) return st;
  return CudaStatus(cudaDeviceSynchronize(), "prefill attention");
}

// ---- decode ------------------------------------------------------------------------------------

struct DecodeCase {
  std::string name;
  int batch;
  AttentionShape shape;
  std::vector<int> contexts;  // cycled over the batch; an entry of 0 draws from [1, 300]
  int splits;                 // 0: DecodeAttentionSplits for this GPU
};

std::vector<int> DecodeContexts(const DecodeCase& c, std::mt19937_64& rng) {
  std::vector<int> out(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    const int want = c.contexts[b % c.contexts.size()];
    out[b] = want > 0 ? want : 1 + static_cast<int>(rng() % 300);
  }
  return out;
}

class DecodeAttentionTest : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(DecodeAttentionTest, MatchesReference) {
  const DecodeCase& c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>()(c.name));
  const std::vector<int> contexts = DecodeContexts(c, rng);
  const Problem p = MakeProblem(c.shape, std::vector<int>(c.batch, 1), contexts, rng());
  DeviceProblem dp = ToDevice(p);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<std::vector<double>> want = Reference(p);
  ASSERT_TRUE(want.ok()) << want.status();
  const absl::Status st = RunDecode(p, dp, c.splits);
  ASSERT_TRUE(st.ok()) << st;
  ExpectNearDevice(dp.outs(), *want, kAtol, kRtol, c.name);
}

const std::vector<int> kAwkwardContexts = {1, 2, 17, 100, 1000, 1029, 63, 64, 65, 1100};

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeAttentionTest,
    ::testing::Values(
        // One sequence, one position: 15 of 16 splits are empty.
        DecodeCase{"b1_ctx1_g8_d128", 1, Shape(8, 1, 128, 16), {1}, 1},
        DecodeCase{"b1_ctx1_g8_d128_s16", 1, Shape(8, 1, 128, 16), {1}, 16},
        // One long sequence, in one CTA per head and split over the SMs.
        DecodeCase{"b1_long_g4_d128", 1, Shape(32, 8, 128, 16), {4133}, 1},
        DecodeCase{"b1_long_g4_d128_auto", 1, Shape(32, 8, 128, 16), {4133}, 0},
        DecodeCase{"b19_g4_d64_bt64_auto", 19, Shape(32, 8, 64, 64), kAwkwardContexts, 0},
        DecodeCase{"b19_g3_d64_bt32", 19, Shape(12, 3, 64, 32), kAwkwardContexts, 1},
        DecodeCase{"b19_g3_d64_bt32_s4", 19, Shape(12, 3, 64, 32), kAwkwardContexts, 4},
        DecodeCase{"b19_g1_d128_bt32_s2", 19, Shape(8, 8, 128, 32), kAwkwardContexts, 2},
        DecodeCase{"b111_g3_d128_bt64", 111, Shape(6, 2, 128, 64), {0, 1, 2, 17, 100}, 1},
        DecodeCase{"b111_g3_d64_bt16_s3", 111, Shape(6, 2, 64, 16), {0, 1, 2, 17, 100}, 3},
        DecodeCase{"b5_g16_d128_s5", 5, Shape(16, 1, 128, 16), {1, 100, 1000, 1029, 2}, 5},
        // A group of 20 query heads: two head tiles per KV head.
        DecodeCase{"b3_g20_d64_bt64_auto", 3, Shape(40, 2, 64, 64), {1500, 7, 300}, 0}),
    [](const ::testing::TestParamInfo<DecodeCase>& info) { return info.param.name; });

// ---- prefill -----------------------------------------------------------------------------------

struct PrefillCase {
  std::string name;
  AttentionShape shape;
  std::vector<std::pair<int, int>> items;  // (chunk rows, cached prefix before the chunk)
};

class PrefillAttentionTest : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(PrefillAttentionTest, MatchesReference) {
  const PrefillCase& c = GetParam();
  std::vector<int> chunks, contexts;
  for (const auto& [n, prefix] : c.items) {
    chunks.push_back(n);
    contexts.push_back(prefix + n);
  }
  const Problem p = MakeProblem(c.shape, chunks, contexts, std::hash<std::string>()(c.name));
  DeviceProblem dp = ToDevice(p);
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<std::vector<double>> want = Reference(p);
  ASSERT_TRUE(want.ok()) << want.status();
  const absl::Status st = RunPrefill(p, dp);
  ASSERT_TRUE(st.ok()) << st;
  ExpectNearDevice(dp.outs(), *want, kAtol, kRtol, c.name);
}

const std::vector<std::pair<int, int>> kAwkwardItems = {
    {1, 0}, {19, 0}, {111, 37}, {300, 0}, {300, 700}, {1, 1000}, {64, 64}, {65, 0}, {19, 1}};

INSTANTIATE_TEST_SUITE_P(
    Shapes, PrefillAttentionTest,
    ::testing::Values(
        PrefillCase{"g3_d64_bt16", Shape(12, 3, 64, 16), kAwkwardItems},
        PrefillCase{"g8_d128_bt32", Shape(8, 1, 128, 32), kAwkwardItems},
        PrefillCase{
            "g4_d128_bt64", Shape(32, 8, 128, 64), {{111, 0}, {19, 1000}, {300, 17}, {1, 0}}},
        PrefillCase{"g1_d64_bt64", Shape(4, 4, 64, 64), {{128, 0}, {129, 63}, {2, 1}}},
        PrefillCase{"g3_d128_bt16", Shape(6, 2, 128, 16), {{300, 300}, {1, 5}, {19, 19}}},
        PrefillCase{"one_row", Shape(8, 2, 128, 16), {{1, 0}}}),
    [](const ::testing::TestParamInfo<PrefillCase>& info) { return info.param.name; });

// ---- decode == prefill for one-row chunks -------------------------------------------------------

TEST(AttentionAgreementTest, DecodeMatchesPrefillOfOneRow) {
  for (const AttentionShape& shape : {Shape(12, 3, 64, 32), Shape(32, 8, 128, 16)}) {
    std::mt19937_64 rng(shape.num_heads);
    std::vector<int> contexts(19);
    for (int& c : contexts) c = 1 + static_cast<int>(rng() % 1500);
    const Problem p = MakeProblem(shape, std::vector<int>(contexts.size(), 1), contexts, rng());
    DeviceProblem decode = ToDevice(p);
    DeviceProblem prefill = ToDevice(p);
    ASSERT_FALSE(HasFailure());
    absl::Status st = RunDecode(p, decode, /*splits=*/3);
    ASSERT_TRUE(st.ok()) << st;
    st = RunPrefill(p, prefill);
    ASSERT_TRUE(st.ok()) << st;
    const std::vector<float> got = DownloadAsFloat(prefill.outs(), p.q.size());
    ExpectNearDevice(decode.outs(), std::vector<double>(got.begin(), got.end()), kAtol, kRtol,
                     "decode vs prefill, D " + std::to_string(shape.head_dim));
  }
}

// ---- splits and arguments ----------------------------------------------------------------------

TEST(DecodeAttentionSplitsTest, FillsTheSms) {
  // 1 x 8 CTAs on 132 SMs: ceil(264 / 8) = 33, capped at 16.
  EXPECT_EQ(DecodeAttentionSplits(1, Shape(32, 8, 128, 16), 132), 16);
  // 19 x 3 = 57 CTAs: ceil(264 / 57) = 5.
  EXPECT_EQ(DecodeAttentionSplits(19, Shape(12, 3, 64, 16), 132), 5);
  // 111 x 2 = 222 CTAs already cover the SMs.
  EXPECT_EQ(DecodeAttentionSplits(111, Shape(6, 2, 128, 16), 132), 1);
  // A group of 20 heads takes two CTAs per KV head: 3 x 2 x 2 = 12, ceil(264 / 12) = 22 -> 16.
  EXPECT_EQ(DecodeAttentionSplits(3, Shape(40, 2, 64, 64), 132), 16);
  // A group of 32 heads is two CTAs per KV head too: 66 x 2 = 132 CTAs cover the SMs.
  EXPECT_EQ(DecodeAttentionSplits(66, Shape(32, 1, 128, 16), 132), 1);
  // 33 x 2 = 66 CTAs: ceil(264 / 66) = 4.
  EXPECT_EQ(DecodeAttentionSplits(33, Shape(32, 1, 128, 16), 132), 4);
  EXPECT_EQ(DecodeAttentionWorkspaceBytes(2, Shape(8, 2, 64, 16), 3),
            size_t{2} * 8 * 3 * (64 + 2) * sizeof(float));
}

TEST(AttentionArgsTest, RejectsBadArguments) {
  DeviceBuffer<uint16_t> buffer = Upload(std::vector<uint16_t>(4096, 0));
  DeviceBuffer<int32_t> ints = Upload(std::vector<int32_t>(16, 1));
  ASSERT_FALSE(HasFailure());
  const bf16* data = reinterpret_cast<const bf16*>(buffer.get());
  bf16* out = reinterpret_cast<bf16*>(buffer.get());

  DecodeAttentionArgs decode;
  decode.q = data;
  decode.out = out;
  decode.k_cache = data;
  decode.v_cache = data;
  decode.block_tables = ints.get();
  decode.max_blocks = 1;
  decode.context_lens = ints.get();
  decode.batch = 1;
  decode.shape = Shape(4, 2, 64, 16);
  const auto expect_invalid = [](const absl::Status& st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
  };
  {
    DecodeAttentionArgs a = decode;
    a.shape.head_dim = 96;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "head_dim 96");
  }
  {
    DecodeAttentionArgs a = decode;
    a.shape.num_heads = 6;
    a.shape.num_kv_heads = 4;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "Nq % Nkv != 0");
  }
  {
    DecodeAttentionArgs a = decode;
    a.shape.num_kv_heads = 0;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "Nkv 0");
  }
  {
    DecodeAttentionArgs a = decode;
    a.shape.block_tokens = 8;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "block_tokens 8");
  }
  {
    DecodeAttentionArgs a = decode;
    a.q = nullptr;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "null q");
  }
  {
    DecodeAttentionArgs a = decode;
    a.context_lens = nullptr;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "null context_lens");
  }
  {
    DecodeAttentionArgs a = decode;
    a.num_splits = 2;  // no workspace
    expect_invalid(LaunchDecodeAttention(a, nullptr), "splits without workspace");
  }
  {
    DecodeAttentionArgs a = decode;
    a.num_splits = 0;
    expect_invalid(LaunchDecodeAttention(a, nullptr), "0 splits");
  }
  {
    DecodeAttentionArgs a = decode;
    a.k_cache = data + 1;  // 2-byte aligned
    expect_invalid(LaunchDecodeAttention(a, nullptr), "misaligned k_cache");
  }
  {
    DecodeAttentionArgs a;  // all null, but batch 0 is a no-op
    EXPECT_TRUE(LaunchDecodeAttention(a, nullptr).ok());
  }

  PrefillAttentionArgs prefill;
  prefill.q = data;
  prefill.out = out;
  prefill.k_cache = data;
  prefill.v_cache = data;
  prefill.block_tables = ints.get();
  prefill.max_blocks = 1;
  prefill.q_offsets = ints.get();
  prefill.context_lens = ints.get();
  prefill.items = 1;
  prefill.max_q_len = 1;
  prefill.shape = Shape(4, 2, 64, 16);
  {
    PrefillAttentionArgs a = prefill;
    a.shape.head_dim = 256;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "head_dim 256");
  }
  {
    PrefillAttentionArgs a = prefill;
    a.shape.num_heads = 5;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "Nq % Nkv != 0");
  }
  {
    PrefillAttentionArgs a = prefill;
    a.shape.block_tokens = 128;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "block_tokens 128");
  }
  {
    PrefillAttentionArgs a = prefill;
    a.q_offsets = nullptr;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "null q_offsets");
  }
  {
    PrefillAttentionArgs a = prefill;
    a.v_cache = nullptr;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "null v_cache");
  }
  {
    PrefillAttentionArgs a = prefill;
    a.max_blocks = 0;
    expect_invalid(LaunchPrefillAttention(a, nullptr), "max_blocks 0");
  }
  {
    PrefillAttentionArgs a;  // all null, but no items is a no-op
    EXPECT_TRUE(LaunchPrefillAttention(a, nullptr).ok());
  }
  CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace engram::kernels
