// LaunchSwiGlu against SwiGlu of model/cpu_ops.h, and LaunchToBf16 against the host's
// round-to-nearest-even conversion.
//
// Tolerances: SwiGLU lands in bf16: rtol 1e-2 (8 significant bits, so rounding is up to 2^-9
// relative; expf on the GPU and std::exp on the CPU may differ by an ulp of f32, which can move a
// value across a bf16 rounding boundary: one bf16 ulp, 2^-8); atol 1e-6 for exact zeros. ToBf16 is
// one correctly rounded conversion on both sides: exact.
// Shapes: T = 1, 19, 111; I = 1, 19, 111 (scalar path), 64, 2560 (float4 path), and misaligned
// views; gates far in both tails (exp overflow: SiLU(-100) is -0).
#include "model/kernels/swiglu.cuh"

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
using ::engram::testing::ToFloat;

// (T, I, misaligned)
class SwiGluTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(SwiGluTest, MatchesCpuOps) {
  const auto [T, I, misaligned] = GetParam();
  const int shift = misaligned ? 1 : 0;
  std::mt19937 rng(T * 577 + I + shift);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> gate_up(shift + static_cast<size_t>(T) * 2 * I);
  for (auto& v : gate_up) v = normal(rng);
  gate_up[shift] = -100.0f;  // exp(100) overflows f32: SiLU = -0
  if (I > 1) gate_up[shift + 1] = 100.0f;
  if (I > 2) gate_up[shift + 2] = 0.0f;

  std::vector<double> want(static_cast<size_t>(T) * I);
  for (int t = 0; t < T; ++t) {
    const float* row = gate_up.data() + shift + static_cast<size_t>(t) * 2 * I;
    std::vector<float> gate(row, row + I);
    SwiGlu(gate.data(), row + I, I);
    for (int i = 0; i < I; ++i) want[static_cast<size_t>(t) * I + i] = gate[i];
  }

  DeviceBuffer<float> d_in = ToDevice(gate_up);
  DeviceBuffer<bf16> d_out =
      ToDevice(std::vector<bf16>(want.size() + shift, __float2bfloat16(0.0f)));
  ASSERT_TRUE(LaunchSwiGlu(d_in.get() + shift, T, I, d_out.get() + shift, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  ExpectNearDevice(d_out.get() + shift, want, 1e-6, 1e-2, absl::StrCat("swiglu T=", T, " I=", I));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwiGluTest,
                         ::testing::Combine(::testing::Values(1, 19, 111),
                                            ::testing::Values(1, 19, 111, 64, 2560),
                                            ::testing::Bool()));

// (n, misaligned)
class ToBf16Test : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {};

TEST_P(ToBf16Test, RoundsToNearestEven) {
  const auto [n, misaligned] = GetParam();
  const int shift = misaligned ? 1 : 0;
  std::mt19937 rng(static_cast<uint32_t>(n) + shift);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  std::vector<float> in(shift + n);
  for (auto& v : in) v = normal(rng);
  // Halfway cases: 1 + 2^-8 rounds to 1 (even), 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
  in[shift] = 1.0f + 1.0f / 256;
  if (n > 1) in[shift + 1] = 1.0f + 3.0f / 256;
  std::vector<double> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = ToFloat(__float2bfloat16_rn(in[shift + i]));
  EXPECT_EQ(want[0], 1.0);
  if (n > 1) {
    EXPECT_EQ(want[1], 1.0 + 1.0 / 64);
  }

  DeviceBuffer<float> d_in = ToDevice(in);
  DeviceBuffer<bf16> d_out = ToDevice(std::vector<bf16>(shift + n, __float2bfloat16(0.0f)));
  ASSERT_TRUE(LaunchToBf16(d_in.get() + shift, n, d_out.get() + shift, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  ExpectNearDevice(d_out.get() + shift, want, 0.0, 0.0, absl::StrCat("to_bf16 n=", n));
}

INSTANTIATE_TEST_SUITE_P(Sizes, ToBf16Test,
                         ::testing::Combine(::testing::Values(int64_t{1}, int64_t{3}, int64_t{19},
                                                              int64_t{4099}, int64_t{1} << 20),
                                            ::testing::Bool()));

TEST(SwiGluArgsTest, RejectsBadArguments) {
  float in = 0;
  bf16 out{};
  EXPECT_EQ(LaunchSwiGlu(nullptr, 1, 1, &out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSwiGlu(&in, 1, 0, &out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchSwiGlu(nullptr, 0, 1, nullptr, nullptr).ok());
  EXPECT_EQ(LaunchToBf16(&in, -1, &out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchToBf16(nullptr, 1, &out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchToBf16(nullptr, 0, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace engram::kernels
