// Gemm (model/cuda/gemm.h: cuBLASLt, and the own GEMV kernel of model/kernels/gemv.cuh for T <= 8)
// against a double-precision CPU product of the same bf16 inputs: out[T, N] = x[T, K] . w[N, K]^T,
// row-major, f32 out.
//
// Tolerance: the inputs are exact bf16 values and the product accumulates in f32, so the error is
// the f32 summation's, ~K * 2^-24 relative to sum |x w|; atol 1e-3 * sqrt(K) covers it. A wrong
// layout, a lost tile or a mixed-up row moves values by O(1).
// Shapes, cuBLASLt: the backbone's (T = 1 decode, 2-40 small prefills, 150 a chunked prompt; N and
// K of the test models' projections), plus odd T around tile edges (15, 17, 31, 33, 39).
// Shapes, GEMV: every T it takes (1-8) and 9 (just past it: cuBLASLt), N from 1 to the dense-4B
// model's 2,560 and not a multiple of the kernel's 8 columns per CTA, K from one 16-byte word (8)
// through less than one lane round (24) and the four-loads-in-flight body with a tail (264, 4096),
// and K = 100 (not a multiple of 8: the kernel refuses it and Gemm falls back to cuBLASLt).
#include "model/cuda/gemm.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "model/cuda/device_buffer.h"
#include "model/kernels/gemv.cuh"
#include "tests/gpu/cuda_ok.h"

namespace engram {
namespace {

// Runs Gemm over random bf16 inputs and compares with the double product; the first mismatches are
// printed.
void ExpectGemmMatchesTheCpu(int T, int N, int K, bool gemv) {
  std::mt19937 rng(T * 7919 + N * 31 + K);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> x(size_t(T) * K), w(size_t(N) * K);
  for (auto& v : x) v = F32ToBf16(normal(rng));
  for (auto& v : w) v = F32ToBf16(normal(rng) / std::sqrt(float(K)));
  auto dx = DeviceBuffer<uint16_t>::FromHost(x);
  auto dw = DeviceBuffer<uint16_t>::FromHost(w);
  auto dout = DeviceBuffer<float>::Create(size_t(T) * N);
  ASSERT_TRUE(dx.ok() && dw.ok() && dout.ok());
  auto gemm = Gemm::Create(gemv);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  CUDA_OK(cudaMemset(dout->get(), 0xff, dout->bytes()));  // NaN: an unwritten output shows
  absl::Status st = (*gemm)->Run(reinterpret_cast<const __nv_bfloat16*>(dx->get()),
                                 reinterpret_cast<const __nv_bfloat16*>(dw->get()), T, N, K,
                                 dout->get(), nullptr);
  ASSERT_TRUE(st.ok()) << st;
  std::vector<float> got(size_t(T) * N);
  CUDA_OK(cudaMemcpy(got.data(), dout->get(), got.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const double atol = 1e-3 * std::sqrt(double(K));
  int bad = 0;
  for (int t = 0; t < T; ++t) {
    for (int n = 0; n < N; ++n) {
      double want = 0;
      for (int k = 0; k < K; ++k) {
        want += double(Bf16ToF32(x[size_t(t) * K + k])) *
                double(Bf16ToF32(w[size_t(n) * K + k]));
      }
      const float g = got[size_t(t) * N + n];
      if (!(std::fabs(g - want) <= atol) && ++bad <= 8) {
        ADD_FAILURE() << "T " << T << " N " << N << " K " << K << " gemv " << gemv << ": out["
                      << t << ", " << n << "] = " << g << ", want " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << "T " << T << " N " << N << " K " << K << " gemv " << gemv;
}

class GemmTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(GemmTest, MatchesTheCpuProduct) {
  const auto [T, N, K] = GetParam();
  ExpectGemmMatchesTheCpu(T, N, K, /*gemv=*/false);
}

class GemvTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(GemvTest, MatchesTheCpuProduct) {
  const auto [T, N, K] = GetParam();
  ExpectGemmMatchesTheCpu(T, N, K, /*gemv=*/true);
}

// Gemm sends the rest to cuBLASLt (K = 100 in the shapes above).
TEST(GemvTest, TakesAlignedRowsOfWholeWordsOnly) {
  const auto* aligned = reinterpret_cast<const __nv_bfloat16*>(uintptr_t{256});
  const auto* odd = reinterpret_cast<const __nv_bfloat16*>(uintptr_t{258});
  EXPECT_TRUE(kernels::GemvSupports(aligned, aligned, 1, 64));
  EXPECT_TRUE(kernels::GemvSupports(aligned, aligned, 8, 8));
  EXPECT_FALSE(kernels::GemvSupports(odd, aligned, 1, 64));
  EXPECT_FALSE(kernels::GemvSupports(aligned, odd, 1, 64));
  EXPECT_FALSE(kernels::GemvSupports(aligned, aligned, 9, 64));
  EXPECT_FALSE(kernels::GemvSupports(aligned, aligned, 1, 100));
}

TEST(GemvTest, RefusesWhatItCannotTake) {
  const auto* p = reinterpret_cast<const __nv_bfloat16*>(uintptr_t{256});
  float* out = nullptr;
  for (auto [T, N, K] : {std::tuple{0, 8, 64}, std::tuple{9, 8, 64}, std::tuple{1, 0, 64},
                         std::tuple{1, 8, 100}, std::tuple{1, 8, 0}}) {
    absl::Status st = kernels::LaunchGemv(p, p, T, N, K, out, nullptr);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << T << " " << N << " " << K << st;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmTest,
                         ::testing::Combine(::testing::Values(1, 2, 15, 17, 31, 33, 39, 40, 150),
                                            ::testing::Values(96, 256, 576, 1024),
                                            ::testing::Values(32, 256, 512)),
                         [](const auto& info) {
                           return absl::StrCat("T", std::get<0>(info.param), "_N",
                                               std::get<1>(info.param), "_K",
                                               std::get<2>(info.param));
                         });

INSTANTIATE_TEST_SUITE_P(Shapes, GemvTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 5, 8, 9),
                                            ::testing::Values(1, 19, 111, 2560),
                                            ::testing::Values(8, 24, 100, 264, 4096)),
                         [](const auto& info) {
                           return absl::StrCat("T", std::get<0>(info.param), "_N",
                                               std::get<1>(info.param), "_K",
                                               std::get<2>(info.param));
                         });

}  // namespace
}  // namespace engram
