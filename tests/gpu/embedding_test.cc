// LaunchEmbedding against the CPU's widening of the bf16 table rows. bf16 -> f32 is exact, so the
// comparison is exact (tolerance 0). Shapes: T = 1, 19, 111; H = 1, 19, 111 (scalar path) and 64,
// 2560 (16-byte vector path); repeated and extreme token ids; and misaligned views of the table and
// of the output, which must fall back to the scalar path and still be right.
#include "model/kernels/embedding.cuh"

#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/cuda/device_buffer.h"
#include "tests/gpu/cuda_ok.h"
#include "tests/gpu/device_expect_near.h"

namespace engram::kernels {
namespace {

using ::engram::testing::ExpectNearDevice;
using ::engram::testing::ToDevice;
using ::engram::testing::ToFloat;

// (T, H, misaligned): misaligned shifts the table and the output by one element.
class EmbeddingTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(EmbeddingTest, MatchesTheTableRows) {
  const auto [T, H, misaligned] = GetParam();
  const int vocab = 1013;
  const int shift = misaligned ? 1 : 0;
  std::mt19937 rng(T * 7919 + H * 31 + shift);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<bf16> table(static_cast<size_t>(vocab) * H + shift);
  for (auto& v : table) v = __float2bfloat16(normal(rng) * 3.0f);
  std::vector<int32_t> tokens(T);
  for (auto& id : tokens) id = static_cast<int32_t>(rng() % vocab);
  tokens[0] = vocab - 1;             // the last row
  if (T > 2) tokens[2] = tokens[1];  // a repeat
  if (T > 3) tokens[3] = 0;

  std::vector<double> want(static_cast<size_t>(T) * H);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < H; ++i) {
      want[static_cast<size_t>(t) * H + i] =
          ToFloat(table[shift + static_cast<size_t>(tokens[t]) * H + i]);
    }
  }

  DeviceBuffer<bf16> d_table = ToDevice(table);
  DeviceBuffer<int32_t> d_tokens = ToDevice(tokens);
  DeviceBuffer<float> d_out = ToDevice(std::vector<float>(want.size() + shift, -7.0f));
  ASSERT_TRUE(
      LaunchEmbedding(d_table.get() + shift, H, d_tokens.get(), T, d_out.get() + shift, nullptr)
          .ok());
  CUDA_OK(cudaDeviceSynchronize());
  ExpectNearDevice(d_out.get() + shift, want, 0.0, 0.0, absl::StrCat("embedding T=", T, " H=", H));
  if (misaligned) {  // the element before the output is untouched
    ExpectNearDevice(d_out.get(), std::vector<double>{-7.0}, 0.0, 0.0, "guard");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingTest,
                         ::testing::Combine(::testing::Values(1, 19, 111),
                                            ::testing::Values(1, 19, 111, 64, 2560),
                                            ::testing::Bool()));

TEST(EmbeddingArgsTest, RejectsBadArguments) {
  float out = 0;
  int32_t token = 0;
  bf16 table{};
  EXPECT_EQ(LaunchEmbedding(nullptr, 8, &token, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchEmbedding(&table, 0, &token, 1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchEmbedding(&table, 8, &token, -1, &out, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(LaunchEmbedding(nullptr, 8, nullptr, 0, nullptr, nullptr).ok());  // T = 0: no-op
}

}  // namespace
}  // namespace engram::kernels
