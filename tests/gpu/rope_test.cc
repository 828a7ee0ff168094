// LaunchRopeKvAppend against ApplyRopeAngles of model/cpu_ops.h (with RopeTable's cos/sin), and
// the paged-cache placement of k and v (common.cuh's KvIndex).
//
// Tolerance: q, k and v land in bf16: rtol 1e-2 (8 significant bits: rounding is up to 2^-9
// relative, and a one-ulp f32 difference, e.g. a fused multiply-add on the GPU, can move a value
// across a rounding boundary: one bf16 ulp, 2^-8), atol 1e-5 for results that cancel to ~0 (their
// f32 error is ~1e-7 of the inputs, which are < 4). Every cache entry that no token writes must
// keep its sentinel exactly.
// Shapes: T = 1, 19, 111; (Nq, Nkv, D) = (4, 2, 8), (7, 1, 2), (3, 3, 22), (32, 8, 128); with and
// without bias; block_tokens 16 and 5; random (non-consecutive) positions and slots.
#include "model/kernels/rope.cuh"

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/cpu_ops.h"
#include "model/cuda/device_buffer.h"
#include "tests/gpu/cuda_ok.h"
#include "tests/gpu/device_expect_near.h"

namespace engram::kernels {
namespace {

using ::engram::testing::ExpectNearDevice;
using ::engram::testing::ToDevice;

constexpr double kBf16Rtol = 1e-2;
constexpr double kBf16Atol = 1e-5;
constexpr float kSentinel = -123.5f;  // exact in bf16

TEST(RopeTableTest, HoldsExactlyTheAnglesOfRopeAngles) {
  for (int D : {2, 8, 22, 128}) {
    for (float theta : {10000.0f, 1000000.0f}) {
      const int max_positions = 4099;
      std::vector<float> cos, sin;
      RopeTable(max_positions, D, theta, &cos, &sin);
      ASSERT_EQ(cos.size(), static_cast<size_t>(max_positions) * (D / 2));
      ASSERT_EQ(sin.size(), cos.size());
      // The angles of positions 4000..4098 as a CPU forward pass starting at 4000 computes them.
      const int start = 4000, T = max_positions - start;
      std::vector<float> want_cos(static_cast<size_t>(T) * (D / 2)), want_sin(want_cos.size());
      RopeAngles(T, D, start, theta, want_cos.data(), want_sin.data());
      for (size_t i = 0; i < want_cos.size(); ++i) {
        ASSERT_EQ(cos[static_cast<size_t>(start) * (D / 2) + i], want_cos[i])
            << "D " << D << " i " << i;
        ASSERT_EQ(sin[static_cast<size_t>(start) * (D / 2) + i], want_sin[i])
            << "D " << D << " i " << i;
      }
    }
  }
}

struct Heads {
  int nq;
  int nkv;
  int d;
};

// (T, heads, bias, block_tokens)
class RopeKvAppendTest : public ::testing::TestWithParam<std::tuple<int, Heads, bool, int>> {};

TEST_P(RopeKvAppendTest, MatchesApplyRopeAngles) {
  const auto [T, heads, with_bias, block_tokens] = GetParam();
  const int Nq = heads.nq, Nkv = heads.nkv, D = heads.d, half = D / 2;
  const int width = (Nq + 2 * Nkv) * D;
  const int max_positions = 2048;
  const int num_blocks = (T + block_tokens - 1) / block_tokens * 2 + 3;
  std::mt19937 rng(T * 1009 + Nq * 31 + D + block_tokens + (with_bias ? 1 : 0));
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);

  std::vector<float> qkv(static_cast<size_t>(T) * width), bias(width);
  for (auto& v : qkv) v = dist(rng);
  for (auto& v : bias) v = dist(rng) * 0.25f;
  std::vector<int32_t> positions(T), slots(T);
  for (auto& p : positions) p = static_cast<int32_t>(rng() % max_positions);
  positions[0] = max_positions - 1;
  if (T > 1) positions[1] = 0;
  // Distinct slots anywhere in the pool (a step's tokens never share one).
  std::vector<int32_t> all_slots(static_cast<size_t>(num_blocks) * block_tokens);
  std::iota(all_slots.begin(), all_slots.end(), 0);
  std::shuffle(all_slots.begin(), all_slots.end(), rng);
  std::copy_n(all_slots.begin(), T, slots.begin());

  std::vector<float> cos, sin;
  RopeTable(max_positions, D, 10000.0f, &cos, &sin);

  // CPU: bias, then ApplyRopeAngles on the q and k heads with each token's cos/sin row.
  std::vector<float> q(static_cast<size_t>(T) * Nq * D), k(static_cast<size_t>(T) * Nkv * D),
      v(static_cast<size_t>(T) * Nkv * D), tok_cos(static_cast<size_t>(T) * half),
      tok_sin(tok_cos.size());
  for (int t = 0; t < T; ++t) {
    std::vector<float> row(qkv.begin() + static_cast<size_t>(t) * width,
                           qkv.begin() + static_cast<size_t>(t + 1) * width);
    if (with_bias) AddInPlace(row.data(), bias.data(), width);
    std::copy_n(row.begin(), Nq * D, q.begin() + static_cast<size_t>(t) * Nq * D);
    std::copy_n(row.begin() + Nq * D, Nkv * D, k.begin() + static_cast<size_t>(t) * Nkv * D);
    std::copy_n(row.begin() + (Nq + Nkv) * D, Nkv * D,
                v.begin() + static_cast<size_t>(t) * Nkv * D);
    std::copy_n(cos.begin() + static_cast<size_t>(positions[t]) * half, half,
                tok_cos.begin() + static_cast<size_t>(t) * half);
    std::copy_n(sin.begin() + static_cast<size_t>(positions[t]) * half, half,
                tok_sin.begin() + static_cast<size_t>(t) * half);
  }
  ApplyRopeAngles(q.data(), T, Nq, D, tok_cos.data(), tok_sin.data());
  ApplyRopeAngles(k.data(), T, Nkv, D, tok_cos.data(), tok_sin.data());

  const size_t pool = static_cast<size_t>(num_blocks) * Nkv * block_tokens * D;
  std::vector<double> want_k(pool, kSentinel), want_v(pool, kSentinel);
  for (int t = 0; t < T; ++t) {
    const int block = slots[t] / block_tokens, offset = slots[t] % block_tokens;
    for (int h = 0; h < Nkv; ++h) {
      const int64_t at = KvIndex(block, h, offset, Nkv, block_tokens, D);
      for (int d = 0; d < D; ++d) {
        want_k[at + d] = k[(static_cast<size_t>(t) * Nkv + h) * D + d];
        want_v[at + d] = v[(static_cast<size_t>(t) * Nkv + h) * D + d];
      }
    }
  }

  DeviceBuffer<float> d_qkv = ToDevice(qkv);
  DeviceBuffer<float> d_bias = ToDevice(bias);
  DeviceBuffer<int32_t> d_positions = ToDevice(positions);
  DeviceBuffer<int32_t> d_slots = ToDevice(slots);
  DeviceBuffer<float> d_cos = ToDevice(cos);
  DeviceBuffer<float> d_sin = ToDevice(sin);
  DeviceBuffer<bf16> d_q = ToDevice(std::vector<bf16>(q.size(), __float2bfloat16(0.0f)));
  DeviceBuffer<bf16> d_k = ToDevice(std::vector<bf16>(pool, __float2bfloat16(kSentinel)));
  DeviceBuffer<bf16> d_v = ToDevice(std::vector<bf16>(pool, __float2bfloat16(kSentinel)));

  RopeKvAppendArgs args;
  args.qkv = d_qkv.get();
  args.bias = with_bias ? d_bias.get() : nullptr;
  args.positions = d_positions.get();
  args.slots = d_slots.get();
  args.cos = d_cos.get();
  args.sin = d_sin.get();
  args.T = T;
  args.num_heads = Nq;
  args.num_kv_heads = Nkv;
  args.head_dim = D;
  args.block_tokens = block_tokens;
  args.q_out = d_q.get();
  args.k_cache = d_k.get();
  args.v_cache = d_v.get();
  ASSERT_TRUE(LaunchRopeKvAppend(args, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());

  const std::string what = absl::StrCat("T=", T, " Nq=", Nq, " Nkv=", Nkv, " D=", D);
  ExpectNearDevice(d_q.get(), std::vector<double>(q.begin(), q.end()), kBf16Atol, kBf16Rtol,
                   what + " q");
  ExpectNearDevice(d_k.get(), want_k, kBf16Atol, kBf16Rtol, what + " k cache");
  ExpectNearDevice(d_v.get(), want_v, kBf16Atol, kBf16Rtol, what + " v cache");
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeKvAppendTest,
                         ::testing::Combine(::testing::Values(1, 19, 111),
                                            ::testing::Values(Heads{4, 2, 8}, Heads{7, 1, 2},
                                                              Heads{3, 3, 22}, Heads{32, 8, 128}),
                                            ::testing::Bool(), ::testing::Values(16, 5)));

TEST(RopeArgsTest, RejectsBadArguments) {
  RopeKvAppendArgs args;
  args.T = 1;
  args.num_heads = 2;
  args.num_kv_heads = 1;
  args.head_dim = 8;
  args.block_tokens = 16;
  EXPECT_EQ(LaunchRopeKvAppend(args, nullptr).code(), absl::StatusCode::kInvalidArgument);  // nulls
  args.T = 0;
  EXPECT_TRUE(LaunchRopeKvAppend(args, nullptr).ok());
  args.head_dim = 7;  // odd
  EXPECT_EQ(LaunchRopeKvAppend(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.head_dim = 8;
  args.block_tokens = 0;
  EXPECT_EQ(LaunchRopeKvAppend(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace engram::kernels
