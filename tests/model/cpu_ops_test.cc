// The CPU ops against naive double-precision formulas, with awkward shapes (1, 19, 111), and the
// thread split: a pool of any size gives bit-identical results.
#include "model/cpu_ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/kv_cache.h"
#include "model/thread_pool.h"
#include "tests/common/expect_near.h"

namespace engram {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

TEST(CpuOpsTest, MatMulMatchesNaiveAndIgnoresTheThreadSplit) {
  ThreadPool pool3(3), pool2(2);
  for (auto [T, K, N] :
       {std::tuple<int, int, int>{1, 19, 111}, {19, 111, 1}, {111, 7, 19}, {3, 1000, 700}}) {
    auto x = Random(size_t(T) * K, 1), w = Random(size_t(N) * K, 2), b = Random(N, 3);
    std::vector<double> want(size_t(T) * N);
    for (int t = 0; t < T; ++t) {
      for (int n = 0; n < N; ++n) {
        double s = b[n];
        for (int k = 0; k < K; ++k) s += double(x[t * K + k]) * w[size_t(n) * K + k];
        want[size_t(t) * N + n] = s;
      }
    }
    std::vector<float> inline_out(size_t(T) * N), out3(inline_out.size()), out2(inline_out.size());
    MatMul(nullptr, x.data(), w.data(), b.data(), T, K, N, inline_out.data());
    MatMul(&pool3, x.data(), w.data(), b.data(), T, K, N, out3.data());
    MatMul(&pool2, x.data(), w.data(), b.data(), T, K, N, out2.data());
    testing::ExpectNear(inline_out, want, 1e-4, 1e-4);
    EXPECT_EQ(inline_out, out3);
    EXPECT_EQ(inline_out, out2);
  }
}

TEST(CpuOpsTest, ThreadPoolCoversTheRangeOnce) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.threads(), 4);
  for (int64_t n : {1, 3, 4, 5, 111, 1000}) {
    std::vector<int> hits(n, 0);
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n " << n << " i " << i;
  }
}

TEST(CpuOpsTest, RmsNormMatchesNaive) {
  const int T = 19, H = 111;
  auto x = Random(T * H, 4), w = Random(H, 5);
  std::vector<double> want(T * H);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += double(x[t * H + i]) * x[t * H + i];
    double inv = 1.0 / std::sqrt(ss / H + 1e-5);
    for (int i = 0; i < H; ++i) want[t * H + i] = x[t * H + i] * inv * w[i];
  }
  std::vector<float> out(T * H);
  RmsNorm(x.data(), w.data(), T, H, 1e-5f, out.data());
  testing::ExpectNear(out, want, 1e-6, 1e-5);
  RmsNorm(x.data(), w.data(), T, H, 1e-5f, x.data());  // in place
  EXPECT_EQ(x, out);
}

TEST(CpuOpsTest, RopeRotatesHalvesByPosition) {
  const int T = 5, heads = 3, D = 6, start = 17;
  auto x = Random(T * heads * D, 6);
  auto y = x;
  ApplyRope(y.data(), T, heads, D, start, 10000.0f);
  std::vector<double> want(x.size());
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < heads; ++h) {
      const float* v = &x[(t * heads + h) * D];
      for (int i = 0; i < D / 2; ++i) {
        double a = (start + t) * std::pow(10000.0, -2.0 * i / D);
        want[(t * heads + h) * D + i] = v[i] * std::cos(a) - v[i + D / 2] * std::sin(a);
        want[(t * heads + h) * D + i + D / 2] = v[i + D / 2] * std::cos(a) + v[i] * std::sin(a);
      }
    }
  }
  testing::ExpectNear(y, want, 1e-5, 1e-5);
  // Position 0 is the identity.
  auto z = x;
  ApplyRope(z.data(), 1, heads, D, 0, 10000.0f);
  EXPECT_EQ(std::vector<float>(z.begin(), z.begin() + heads * D),
            std::vector<float>(x.begin(), x.begin() + heads * D));
}

TEST(CpuOpsTest, GroupedQueryAttentionIsCausal) {
  const int Nq = 6, Nkv = 2, D = 5, start = 4, T = 3, total = start + T;
  KvCache cache(1, Nkv, D, 16);
  ASSERT_TRUE(cache.Reserve(total).ok());
  auto k = Random(total * Nkv * D, 7), v = Random(total * Nkv * D, 8), q = Random(T * Nq * D, 9);
  for (int p = 0; p < total; ++p) {
    std::copy_n(&k[p * Nkv * D], Nkv * D, cache.Keys(0, p));
    std::copy_n(&v[p * Nkv * D], Nkv * D, cache.Values(0, p));
  }
  std::vector<double> want(T * Nq * D, 0.0);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < Nq; ++h) {
      int kvh = h / (Nq / Nkv), last = start + t;
      std::vector<double> s(last + 1);
      double mx = -1e300, sum = 0;
      for (int j = 0; j <= last; ++j) {
        double d = 0;
        for (int i = 0; i < D; ++i)
          d += double(q[(t * Nq + h) * D + i]) * k[(j * Nkv + kvh) * D + i];
        s[j] = d / std::sqrt(double(D));
        mx = std::max(mx, s[j]);
      }
      for (int j = 0; j <= last; ++j) sum += (s[j] = std::exp(s[j] - mx));
      for (int j = 0; j <= last; ++j) {
        for (int i = 0; i < D; ++i)
          want[(t * Nq + h) * D + i] += s[j] / sum * v[(j * Nkv + kvh) * D + i];
      }
    }
  }
  ThreadPool pool(3);
  std::vector<float> out(T * Nq * D), out_pool(out.size());
  Attention(nullptr, q.data(), cache, 0, T, start, Nq, Nkv, D, out.data());
  Attention(&pool, q.data(), cache, 0, T, start, Nq, Nkv, D, out_pool.data());
  testing::ExpectNear(out, want, 1e-5, 1e-5);
  EXPECT_EQ(out, out_pool);
}

TEST(CpuOpsTest, SwiGluAndAdd) {
  std::vector<float> gate = {-2.0f, 0.0f, 1.5f}, up = {1.0f, 3.0f, -2.0f};
  SwiGlu(gate.data(), up.data(), 3);
  testing::ExpectNear(gate, {-2.0 / (1 + std::exp(2.0)), 0.0, 1.5 / (1 + std::exp(-1.5)) * -2.0},
                      1e-6, 1e-6);
  std::vector<float> a = {1, 2, 3}, b = {0.5f, -2, 1};
  AddInPlace(a.data(), b.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{1.5f, 0, 4}));
}

}  // namespace
}  // namespace engram
