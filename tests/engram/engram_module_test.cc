// The Engram module on the CPU against a plain double-precision transcription of the reference's
// PyTorch code (pad, conv, slice), with awkward shapes; chunked prefill + decode == one shot;
// the gate's s = 0 case; weight loading and its errors.
#include "model/engram_module.h"

#include <cmath>
#include <filesystem>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/expect_near.h"

namespace engram {
namespace {

using ::testing::HasSubstr;

std::vector<float> Random(size_t n, std::mt19937& gen, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

EngramModuleWeights RandomWeights(int H, int M, int D, int K, int dilation, uint32_t seed) {
  std::mt19937 gen(seed);
  EngramModuleWeights w;
  w.hidden_size = H;
  w.hc_mult = M;
  w.d_mem = D;
  w.kernel_size = K;
  w.dilation = dilation;
  const float s = 1.0f / std::sqrt(static_cast<float>(D));
  w.value_proj_weight = Random(size_t(H) * D, gen, s);
  w.value_proj_bias = Random(H, gen, 0.1f);
  w.key_proj_weight = Random(size_t(M) * H * D, gen, s);
  w.key_proj_bias = Random(size_t(M) * H, gen, 0.1f);
  w.key_norm_weight = Random(size_t(M) * H, gen, 0.2f, 1.0f);
  w.query_norm_weight = Random(size_t(M) * H, gen, 0.2f, 1.0f);
  if (K > 0) {
    w.conv_weight = Random(size_t(M) * H * K, gen, 0.5f);
    w.conv_norm_weight = Random(size_t(M) * H, gen, 0.2f, 1.0f);
  }
  return w;
}

// The reference, literally, in double: [T, M, H].
std::vector<double> Reference(const EngramModuleWeights& w, const std::vector<float>& rows,
                              const std::vector<float>& hidden, int T) {
  const int H = w.hidden_size, M = w.hc_mult, D = w.d_mem, K = w.kernel_size;
  auto rms = [&](const double* x, const float* g, double eps, double* y) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += x[i] * x[i];
    const double r = 1.0 / std::sqrt(ss / H + eps);
    for (int i = 0; i < H; ++i) y[i] = x[i] * r * g[i];
  };
  std::vector<double> u(size_t(T) * M * H);
  for (int t = 0; t < T; ++t) {
    std::vector<double> v(H), k(H), nk(H), q(H), nq(H);
    for (int o = 0; o < H; ++o) {
      double acc = w.value_proj_bias[o];
      for (int d = 0; d < D; ++d)
        acc += double(w.value_proj_weight[size_t(o) * D + d]) * rows[size_t(t) * D + d];
      v[o] = acc;
    }
    for (int m = 0; m < M; ++m) {
      for (int o = 0; o < H; ++o) {
        double acc = w.key_proj_bias[size_t(m) * H + o];
        for (int d = 0; d < D; ++d) {
          acc += double(w.key_proj_weight[(size_t(m) * H + o) * D + d]) * rows[size_t(t) * D + d];
        }
        k[o] = acc;
        q[o] = hidden[(size_t(t) * M + m) * H + o];
      }
      rms(k.data(), &w.key_norm_weight[size_t(m) * H], 1.1920928955078125e-07, nk.data());
      rms(q.data(), &w.query_norm_weight[size_t(m) * H], 1.1920928955078125e-07, nq.data());
      double s = 0;
      for (int i = 0; i < H; ++i) s += nk[i] * nq[i];
      s /= std::sqrt(double(H));
      const double sign = s > 0 ? 1 : (s < 0 ? -1 : 0);
      const double gate = 1.0 / (1.0 + std::exp(-std::sqrt(std::max(std::fabs(s), 1e-6)) * sign));
      for (int i = 0; i < H; ++i) u[(size_t(t) * M + m) * H + i] = gate * v[i];
    }
  }
  if (K == 0) return u;
  // x_norm: [T, C]; padded on the left by (K-1)*dilation zeros; conv; keep the first T; SiLU.
  const int C = M * H, pad = (K - 1) * w.dilation;
  std::vector<double> xp(size_t(T + pad) * C, 0.0);
  for (int t = 0; t < T; ++t) {
    for (int m = 0; m < M; ++m) {
      rms(&u[(size_t(t) * M + m) * H], &w.conv_norm_weight[size_t(m) * H], 1e-5,
          &xp[size_t(t + pad) * C + size_t(m) * H]);
    }
  }
  std::vector<double> out = u;
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < C; ++c) {
      double y = 0;
      for (int j = 0; j < K; ++j)
        y += double(w.conv_weight[size_t(c) * K + j]) * xp[size_t(t + j * w.dilation) * C + c];
      out[size_t(t) * C + c] += y / (1.0 + std::exp(-y));
    }
  }
  return out;
}

struct Shape {
  int H, M, D, K, dilation, T;
};

class EngramModuleShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(EngramModuleShapes, MatchesTheReference) {
  const Shape s = GetParam();
  auto module = EngramModule::Create(RandomWeights(s.H, s.M, s.D, s.K, s.dilation, 11));
  ASSERT_TRUE(module.ok()) << module.status();
  std::mt19937 gen(5);
  const auto rows = Random(size_t(s.T) * s.D, gen);
  const auto hidden = Random(size_t(s.T) * s.M * s.H, gen);
  std::vector<float> out(size_t(s.T) * s.M * s.H);
  ASSERT_TRUE(module->Forward(rows.data(), hidden.data(), s.T, nullptr, out.data()).ok());
  testing::ExpectNear(out, Reference(module->weights(), rows, hidden, s.T), 2e-5, 2e-4);
}

INSTANTIATE_TEST_SUITE_P(Awkward, EngramModuleShapes,
                         ::testing::Values(Shape{1, 1, 1, 0, 1, 1}, Shape{19, 1, 24, 4, 3, 19},
                                           Shape{19, 4, 16, 4, 3, 23}, Shape{32, 2, 111, 3, 2, 7},
                                           Shape{7, 3, 9, 1, 3, 5}, Shape{64, 1, 48, 0, 3, 13},
                                           Shape{16, 2, 8, 5, 4, 30}));

TEST(EngramModuleTest, ChunkedPrefillAndDecodeEqualOneShot) {
  const int H = 19, M = 2, D = 24, T = 40;
  auto module = EngramModule::Create(RandomWeights(H, M, D, 4, 3, 3));
  ASSERT_TRUE(module.ok());
  std::mt19937 gen(9);
  const auto rows = Random(size_t(T) * D, gen);
  const auto hidden = Random(size_t(T) * M * H, gen);
  std::vector<float> one_shot(size_t(T) * M * H), pieces(size_t(T) * M * H);
  ASSERT_TRUE(module->Forward(rows.data(), hidden.data(), T, nullptr, one_shot.data()).ok());

  EngramConvState state = module->NewConvState();
  int t = 0;
  for (int chunk : {1, 2, 11, 5, 1, 1, 1, 3, 15}) {  // a prompt in chunks, then decode steps
    ASSERT_TRUE(module
                    ->Forward(rows.data() + size_t(t) * D, hidden.data() + size_t(t) * M * H, chunk,
                              &state, pieces.data() + size_t(t) * M * H)
                    .ok());
    t += chunk;
  }
  ASSERT_EQ(t, T);
  EXPECT_EQ(state.positions, T);
  for (size_t i = 0; i < one_shot.size(); ++i) {
    ASSERT_NEAR(pieces[i], one_shot[i], 1e-6f * (1 + std::fabs(one_shot[i]))) << "index " << i;
  }
  // Reset is a sequence start again.
  state.Reset();
  std::vector<float> again(size_t(5) * M * H);
  ASSERT_TRUE(module->Forward(rows.data(), hidden.data(), 5, &state, again.data()).ok());
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i], one_shot[i]);
}

TEST(EngramModuleTest, ZeroScoreGivesHalfGate) {
  // All key weights and biases zero: RMSNorm(0) = 0, so s = 0, sign(0) = 0 and a = sigmoid(0) =
  // 0.5.
  const int H = 8, D = 8;
  EngramModuleWeights w = RandomWeights(H, 1, D, 0, 3, 1);
  std::fill(w.key_proj_weight.begin(), w.key_proj_weight.end(), 0.0f);
  std::fill(w.key_proj_bias.begin(), w.key_proj_bias.end(), 0.0f);
  auto module = EngramModule::Create(w);
  ASSERT_TRUE(module.ok());
  std::mt19937 gen(2);
  const auto rows = Random(D, gen), hidden = Random(H, gen);
  std::vector<float> out(H);
  ASSERT_TRUE(module->Forward(rows.data(), hidden.data(), 1, nullptr, out.data()).ok());
  for (int o = 0; o < H; ++o) {
    float v = w.value_proj_bias[o];
    for (int d = 0; d < D; ++d) v += w.value_proj_weight[size_t(o) * D + d] * rows[d];
    EXPECT_NEAR(out[o], 0.5f * v, 1e-5f);
  }
}

TEST(EngramModuleTest, RejectsBadWeightsAndState) {
  EngramModuleWeights w = RandomWeights(8, 2, 8, 4, 3, 1);
  w.key_norm_weight.pop_back();
  EXPECT_THAT(EngramModule::Create(w).status().message(), HasSubstr("norm1"));
  auto module = EngramModule::Create(RandomWeights(8, 2, 8, 4, 3, 1));
  ASSERT_TRUE(module.ok());
  EngramConvState wrong;
  wrong.history.resize(3);
  std::vector<float> rows(8), hidden(16), out(16);
  EXPECT_THAT(module->Forward(rows.data(), hidden.data(), 1, &wrong, out.data()).message(),
              HasSubstr("conv state"));
  EXPECT_FALSE(module->Forward(rows.data(), hidden.data(), -1, nullptr, out.data()).ok());
}

// Writes the module's tensors under the reference names (bf16 to exercise conversion).
std::string WriteModuleFile(const EngramModuleWeights& w, const std::string& prefix,
                            bool drop_norm2, bool bad_conv_shape) {
  const int64_t H = w.hidden_size, D = w.d_mem, K = w.kernel_size;
  SafetensorsWriter writer;
  writer.AddF32As(prefix + "value_proj.weight", DType::kBF16, {H, D}, w.value_proj_weight);
  writer.AddF32As(prefix + "value_proj.bias", DType::kF32, {H}, w.value_proj_bias);
  for (int m = 0; m < w.hc_mult; ++m) {
    const std::string b = std::to_string(m);
    auto part = [&](const std::vector<float>& v, size_t n) {
      return absl::Span<const float>(v.data() + m * n, n);
    };
    writer.AddF32As(prefix + "key_projs." + b + ".weight", DType::kF32, {H, D},
                    part(w.key_proj_weight, H * D));
    writer.AddF32As(prefix + "key_projs." + b + ".bias", DType::kF16, {H},
                    part(w.key_proj_bias, H));
    writer.AddF32As(prefix + "norm1." + b + ".weight", DType::kF32, {H},
                    part(w.key_norm_weight, H));
    if (!drop_norm2) {
      writer.AddF32As(prefix + "norm2." + b + ".weight", DType::kF32, {H},
                      part(w.query_norm_weight, H));
    }
    writer.AddF32As(prefix + "short_conv.norms." + b + ".weight", DType::kF32, {H},
                    part(w.conv_norm_weight, H));
  }
  const std::vector<int64_t> conv_shape = bad_conv_shape
                                              ? std::vector<int64_t>{w.hc_mult * H, K}
                                              : std::vector<int64_t>{w.hc_mult * H, 1, K};
  writer.AddF32As(prefix + "short_conv.conv.weight", DType::kF32, conv_shape, w.conv_weight);
  static int counter = 0;
  const std::string path = ::testing::TempDir() + "/engram_module_" + std::to_string(getpid()) +
                           "_" + std::to_string(counter++) + ".safetensors";
  EXPECT_TRUE(writer.Write(path).ok());
  return path;
}

EngramConfig ConfigFor(int H, int M) {
  EngramConfig c;
  c.layer_ids = {2};
  c.max_ngram_size = 3;
  c.n_heads = 2;
  c.head_dim = 4;  // d_mem = 2 * 2 * 4 = 16
  c.vocab_size_per_order = {11, 13};
  c.kernel_size = 4;
  c.hc_mult = M;
  c.hidden_size = H;
  return c;
}

TEST(LoadEngramModuleWeightsTest, LoadsAnyFloatDtype) {
  const EngramConfig config = ConfigFor(8, 2);
  EngramModuleWeights w = RandomWeights(8, 2, config.d_mem(), 4, 3, 4);
  const std::string path = WriteModuleFile(w, "model.layers.2.engram.", false, false);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto loaded = LoadEngramModuleWeights(LookupIn(**file), "model.layers.2.engram.", config);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dilation, 3);
  EXPECT_EQ(loaded->d_mem, 16);
  for (size_t i = 0; i < w.value_proj_weight.size(); ++i) {
    EXPECT_EQ(loaded->value_proj_weight[i], Bf16ToF32(F32ToBf16(w.value_proj_weight[i])));
  }
  EXPECT_EQ(loaded->key_proj_weight, w.key_proj_weight);
  EXPECT_EQ(loaded->query_norm_weight, w.query_norm_weight);
  EXPECT_EQ(loaded->conv_weight, w.conv_weight);
  for (size_t i = 0; i < w.key_proj_bias.size(); ++i) {
    EXPECT_NEAR(loaded->key_proj_bias[i], w.key_proj_bias[i], 1e-3);
  }
  std::filesystem::remove(path);
}

TEST(LoadEngramModuleWeightsTest, NamesTheMissingOrMisshapedTensor) {
  const EngramConfig config = ConfigFor(8, 2);
  EngramModuleWeights w = RandomWeights(8, 2, config.d_mem(), 4, 3, 4);
  const std::string missing = WriteModuleFile(w, "", true, false);
  auto f1 = SafetensorsFile::Open(missing);
  ASSERT_TRUE(f1.ok());
  auto r1 = LoadEngramModuleWeights(LookupIn(**f1), "", config);
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r1.status().message(), HasSubstr("norm2.0.weight"));

  const std::string bad = WriteModuleFile(w, "", false, true);
  auto f2 = SafetensorsFile::Open(bad);
  ASSERT_TRUE(f2.ok());
  auto r2 = LoadEngramModuleWeights(LookupIn(**f2), "", config);
  EXPECT_FALSE(r2.ok());
  EXPECT_THAT(r2.status().message(), HasSubstr("short_conv.conv.weight"));

  EngramConfig no_hidden = config;
  no_hidden.hidden_size = 0;
  EXPECT_THAT(LoadEngramModuleWeights(LookupIn(**f2), "", no_hidden).status().message(),
              HasSubstr("hidden_size"));
  std::filesystem::remove(missing);
  std::filesystem::remove(bad);
}

}  // namespace
}  // namespace engram
