#include "model/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/kv_cache.h"
#include "model/thread_pool.h"

namespace engram {

float Dot(const float* a, const float* b, int64_t n) {
  // Eight independent lanes let the compiler vectorise without reassociating anything, so the
  // result is the same wherever and however often this is called.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

void RmsNorm(const float* x, const float* weight, int64_t T, int64_t H, float eps, float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const float* row = x + t * H;
    // The mean of squares in double: cheap at these widths and closer to the PyTorch reference.
    double ss = 0;
    for (int64_t i = 0; i < H; ++i) ss += double(row[i]) * row[i];
    float inv = static_cast<float>(1.0 / std::sqrt(ss / double(H) + double(eps)));
    float* o = out + t * H;
    for (int64_t i = 0; i < H; ++i) o[i] = (row[i] * inv) * weight[i];
  }
}

void MatMul(ThreadPool* pool, const float* x, const float* w, const float* bias, int64_t T,
            int64_t K, int64_t N, float* out) {
  auto run = [&](int64_t begin, int64_t end) {
    // Output features outermost: a weight row is read once from memory and reused for all T tokens
    // while it sits in L1.
    for (int64_t n = begin; n < end; ++n) {
      const float* wn = w + n * K;
      float b = bias ? bias[n] : 0.0f;
      for (int64_t t = 0; t < T; ++t) out[t * N + n] = Dot(x + t * K, wn, K) + b;
    }
  };
  // Below ~32k multiply-adds per range the hand-off costs more than it saves.
  int64_t min_rows = std::max<int64_t>(1, 32768 / std::max<int64_t>(K * T, 1));
  if (pool == nullptr) {
    run(0, N);
  } else {
    pool->ParallelFor(N, min_rows, run);
  }
}

void ApplyRope(float* x, int64_t T, int heads, int D, int start_position, float theta) {
  std::vector<float> cos_v(T * (D / 2)), sin_v(T * (D / 2));
  RopeAngles(T, D, start_position, theta, cos_v.data(), sin_v.data());
  ApplyRopeAngles(x, T, heads, D, cos_v.data(), sin_v.data());
}

void RopeAngles(int64_t T, int D, int start_position, float theta, float* cos, float* sin) {
  const int half = D / 2;
  for (int64_t t = 0; t < T; ++t) {
    double pos = double(start_position + t);
    for (int i = 0; i < half; ++i) {
      double inv_freq = std::pow(double(theta), -2.0 * i / D);
      cos[t * half + i] = static_cast<float>(std::cos(pos * inv_freq));
      sin[t * half + i] = static_cast<float>(std::sin(pos * inv_freq));
    }
  }
}

void ApplyRopeAngles(float* x, int64_t T, int heads, int D, const float* cos, const float* sin) {
  const int half = D / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * D;
      for (int i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void Attention(ThreadPool* pool, const float* q, const KvCache& cache, int layer, int64_t T,
               int start_position, int num_heads, int num_kv_heads, int D, float* out) {
  const int group = num_heads / num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(start_position + T);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t t = job / num_heads;
      const int h = static_cast<int>(job % num_heads);
      const int kvh = h / group;
      const int last = start_position + static_cast<int>(t);
      const float* qh = q + (t * num_heads + h) * D;
      float max_score = -INFINITY;
      for (int j = 0; j <= last; ++j) {
        scores[j] = Dot(qh, cache.Keys(layer, j) + kvh * D, D) * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float sum = 0;
      for (int j = 0; j <= last; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      float* o = out + (t * num_heads + h) * D;
      std::fill(o, o + D, 0.0f);
      for (int j = 0; j <= last; ++j) {
        const float* vj = cache.Values(layer, j) + kvh * D;
        const float p = scores[j];
        for (int d = 0; d < D; ++d) o[d] += p * vj[d];
      }
      const float inv = 1.0f / sum;
      for (int d = 0; d < D; ++d) o[d] *= inv;
    }
  };
  const int64_t jobs = T * num_heads;
  // A job costs ~2 * D * (position + 1) flops; hand out at least ~16k per range.
  int64_t per_job = 2 * int64_t(D) * (start_position + T);
  int64_t min_jobs = std::max<int64_t>(1, 16384 / std::max<int64_t>(per_job, 1));
  if (pool == nullptr) {
    run(0, jobs);
  } else {
    pool->ParallelFor(jobs, min_jobs, run);
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    gate[i] = (g / (1.0f + std::exp(-g))) * up[i];
  }
}

void AddInPlace(float* out, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += y[i];
}

}  // namespace engram
