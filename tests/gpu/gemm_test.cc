// Gemm (model/cuda/gemm.h, cuBLASLt) against a double-precision CPU product of the same bf16
// inputs: out[T, N] = x[T, K] . w[N, K]^T, row-major, f32 out.
//
// Tolerance: the inputs are exact bf16 values and the product accumulates in f32, so the error is
// the f32 summation's, ~K * 2^-24 relative to sum |x w|; atol 1e-3 * sqrt(K) covers it. A wrong
// layout, a lost tile or a mixed-up row moves values by O(1).
// Shapes: the backbone's (T = 1 decode, 2-40 small prefills, 150 a chunked prompt; N and K of the
// test models' projections), plus odd T around tile edges (15, 17, 31, 33, 39).
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
#include "tests/gpu/cuda_ok.h"

namespace engram {
namespace {

class GemmTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(GemmTest, MatchesTheCpuProduct) {
  const auto [T, N, K] = GetParam();
  std::mt19937 rng(T * 7919 + N * 31 + K);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> x(size_t(T) * K), w(size_t(N) * K);
  for (auto& v : x) v = F32ToBf16(normal(rng));
  for (auto& v : w) v = F32ToBf16(normal(rng) / std::sqrt(float(K)));
  auto dx = DeviceBuffer<uint16_t>::FromHost(x);
  auto dw = DeviceBuffer<uint16_t>::FromHost(w);
  auto dout = DeviceBuffer<float>::Create(size_t(T) * N);
  ASSERT_TRUE(dx.ok() && dw.ok() && dout.ok());
  auto gemm = Gemm::Create();
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
        want += double(Bf16ToF32(x[size_t(t) * K + k])) * double(Bf16ToF32(w[size_t(n) * K + k]));
      }
      const float g = got[size_t(t) * N + n];
      if (!(std::fabs(g - want) <= atol) && ++bad <= 8) {
        ADD_FAILURE() << "T " << T << " N " << N << " K " << K << ": out[" << t << ", " << n
                      << "] = " << g << ", want " << want;
      }
    }
  }
  EXPECT_EQ(bad, 0) << "T " << T << " N " << N << " K " << K;
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

}  // namespace
}  // namespace engram
