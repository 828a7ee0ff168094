// LaunchAddRmsNorm and LaunchGatherRmsNorm against RmsNorm/AddInPlace of model/cpu_ops.h.
//
// Tolerances:
//   - the residual h (f32): exact. Both sides compute h + (add + bias) with the same two IEEE
//     additions, which no compiler may reassociate.
//   - the normalised output (bf16): rtol 1e-2. bf16 keeps 8 significant bits, so rounding alone
//     is up to 2^-9 relative, and an f32 difference of the mean square (f32 tree here, double on
//     the CPU: ~1e-6 relative) can move a value across a rounding boundary: one bf16 ulp, 2^-8.
//     atol 1e-6 only covers exact zeros.
// Shapes: H = 1, 19, 111 (scalar path), 2560 and 8192 (float4 path); T = 1, 19, 111; every mode
// (add + bias + out, add + out, add only, out only); misaligned views that force the scalar path.
#include "model/kernels/rms_norm.cuh"

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
constexpr double kBf16Atol = 1e-6;

std::vector<float> Random(size_t n, float scale, std::mt19937* rng) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(*rng);
  return v;
}

std::vector<double> AsDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

enum class Mode { kAddBiasNorm, kAddNorm, kAddOnly, kNormOnly };

std::string ModeName(Mode m) {
  switch (m) {
    case Mode::kAddBiasNorm:
      return "add+bias+norm";
    case Mode::kAddNorm:
      return "add+norm";
    case Mode::kAddOnly:
      return "add only";
    case Mode::kNormOnly:
      return "norm only";
  }
  return "?";
}

// (T, H, mode, misaligned)
class AddRmsNormTest : public ::testing::TestWithParam<std::tuple<int, int, Mode, bool>> {};

TEST_P(AddRmsNormTest, MatchesCpuOps) {
  const auto [T, H, mode, misaligned] = GetParam();
  const size_t n = static_cast<size_t>(T) * H;
  const int shift = misaligned ? 1 : 0;  // one element off every base pointer
  std::mt19937 rng(T * 131 + H * 7 + static_cast<int>(mode) * 3 + shift);
  const std::vector<float> h = Random(n, 2.0f, &rng);
  const std::vector<float> add = Random(n, 1.0f, &rng);
  const std::vector<float> bias = Random(H, 0.5f, &rng);
  const std::vector<float> weight = Random(H, 1.5f, &rng);
  const float eps = 1e-5f;
  const bool with_add = mode != Mode::kNormOnly;
  const bool with_bias = mode == Mode::kAddBiasNorm;
  const bool with_out = mode != Mode::kAddOnly;

  // CPU: the bias joins the added rows first (as a projection's bias does), then the residual add,
  // then the norm.
  std::vector<float> want_h = h;
  if (with_add) {
    std::vector<float> addend = add;
    if (with_bias) {
      for (int t = 0; t < T; ++t)
        AddInPlace(addend.data() + static_cast<size_t>(t) * H, bias.data(), H);
    }
    AddInPlace(want_h.data(), addend.data(), static_cast<int64_t>(n));
  }
  std::vector<float> want_out(n);
  RmsNorm(want_h.data(), weight.data(), T, H, eps, want_out.data());

  auto padded = [&](const std::vector<float>& v) {
    std::vector<float> p(shift, 0.0f);
    p.insert(p.end(), v.begin(), v.end());
    return p;
  };
  DeviceBuffer<float> d_h = ToDevice(padded(h));
  DeviceBuffer<float> d_add = ToDevice(padded(add));
  DeviceBuffer<float> d_bias = ToDevice(padded(bias));
  DeviceBuffer<float> d_weight = ToDevice(padded(weight));
  DeviceBuffer<bf16> d_out = ToDevice(std::vector<bf16>(n + shift, __float2bfloat16(0.0f)));
  ASSERT_TRUE(LaunchAddRmsNorm(d_h.get() + shift, with_add ? d_add.get() + shift : nullptr,
                               with_bias ? d_bias.get() + shift : nullptr, d_weight.get() + shift,
                               eps, T, H, with_out ? d_out.get() + shift : nullptr, nullptr)
                  .ok());
  CUDA_OK(cudaDeviceSynchronize());
  const std::string what = absl::StrCat(ModeName(mode), " T=", T, " H=", H);
  ExpectNearDevice(d_h.get() + shift, AsDouble(want_h), 0.0, 0.0, what + " h");
  if (with_out) {
    ExpectNearDevice(d_out.get() + shift, AsDouble(want_out), kBf16Atol, kBf16Rtol, what + " out");
  } else {  // out untouched: still zeros
    ExpectNearDevice(d_out.get(), std::vector<double>(n + shift, 0.0), 0.0, 0.0, what + " out");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AddRmsNormTest,
                         ::testing::Combine(::testing::Values(1, 19, 111),
                                            ::testing::Values(1, 19, 111, 2560, 8192),
                                            ::testing::Values(Mode::kAddBiasNorm, Mode::kAddNorm,
                                                              Mode::kAddOnly, Mode::kNormOnly),
                                            ::testing::Bool()));

// (B, H, misaligned)
class GatherRmsNormTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(GatherRmsNormTest, MatchesCpuOps) {
  const auto [B, H, misaligned] = GetParam();
  const int T = 111;
  const int shift = misaligned ? 1 : 0;
  std::mt19937 rng(B * 17 + H + shift);
  std::vector<float> x = Random(static_cast<size_t>(T) * H, 3.0f, &rng);
  // One row of tiny values: the eps term matters there.
  for (int i = 0; i < H; ++i) x[static_cast<size_t>(5) * H + i] *= 1e-4f;
  const std::vector<float> weight = Random(H, 1.5f, &rng);
  std::vector<int32_t> rows(B);
  for (auto& r : rows) r = static_cast<int32_t>(rng() % T);
  rows[0] = T - 1;
  if (B > 2) rows[1] = 5;
  if (B > 3) rows[3] = rows[2];  // repeated rows
  const float eps = 1e-6f;

  std::vector<float> gathered(static_cast<size_t>(B) * H), want(static_cast<size_t>(B) * H);
  for (int b = 0; b < B; ++b) {
    std::copy_n(x.data() + static_cast<size_t>(rows[b]) * H, H,
                gathered.data() + static_cast<size_t>(b) * H);
  }
  RmsNorm(gathered.data(), weight.data(), B, H, eps, want.data());

  std::vector<float> x_padded(shift, 0.0f), w_padded(shift, 0.0f);
  x_padded.insert(x_padded.end(), x.begin(), x.end());
  w_padded.insert(w_padded.end(), weight.begin(), weight.end());
  DeviceBuffer<float> d_x = ToDevice(x_padded);
  DeviceBuffer<float> d_weight = ToDevice(w_padded);
  DeviceBuffer<int32_t> d_rows = ToDevice(rows);
  DeviceBuffer<bf16> d_out =
      ToDevice(std::vector<bf16>(static_cast<size_t>(B) * H + shift, __float2bfloat16(0.0f)));
  ASSERT_TRUE(LaunchGatherRmsNorm(d_x.get() + shift, d_rows.get(), B, d_weight.get() + shift, eps,
                                  H, d_out.get() + shift, nullptr)
                  .ok());
  CUDA_OK(cudaDeviceSynchronize());
  ExpectNearDevice(d_out.get() + shift, AsDouble(want), kBf16Atol, kBf16Rtol,
                   absl::StrCat("gather B=", B, " H=", H));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GatherRmsNormTest,
                         ::testing::Combine(::testing::Values(1, 19),
                                            ::testing::Values(1, 19, 111, 2560, 8192),
                                            ::testing::Bool()));

TEST(RmsNormArgsTest, RejectsBadArguments) {
  float h = 0, w = 1, add = 0, bias = 0;
  bf16 out{};
  int32_t row = 0;
  EXPECT_EQ(LaunchAddRmsNorm(&h, nullptr, &bias, &w, 1e-5f, 1, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // bias without add
  EXPECT_EQ(LaunchAddRmsNorm(nullptr, &add, nullptr, &w, 1e-5f, 1, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchAddRmsNorm(&h, &add, nullptr, nullptr, 1e-5f, 1, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // an output needs the weight
  EXPECT_EQ(LaunchAddRmsNorm(&h, &add, nullptr, &w, 1e-5f, 1, 0, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchAddRmsNorm(&h, &add, nullptr, &w, 1e-5f, -1, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchAddRmsNorm(&h, &add, nullptr, &w, 1e-5f, 0, 1, &out, nullptr).ok());
  EXPECT_EQ(LaunchGatherRmsNorm(nullptr, &row, 1, &w, 1e-5f, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchGatherRmsNorm(&h, &row, 1, &w, 1e-5f, 0, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchGatherRmsNorm(nullptr, nullptr, 0, nullptr, 1e-5f, 1, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace engram::kernels
