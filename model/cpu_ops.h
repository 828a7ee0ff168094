// The operations of the CPU backbone, in plain f32: the reference every future kernel is tested
// against (docs/architecture.md pattern 3).
//
// Determinism: each output element is computed by one fixed sequence of floating-point operations
// that does not depend on T (the number of tokens), on the thread split or on what else is in the
// batch. That is what makes "batch == each alone" and "chunked prefill == one-shot prefill" hold
// bit for bit.
#ifndef ENGRAM_MODEL_CPU_OPS_H_
#define ENGRAM_MODEL_CPU_OPS_H_

#include <cstdint>

namespace engram {

class ThreadPool;
class KvCache;

// Sum of a[i] * b[i] over i < n, in a fixed order (8 interleaved partial sums, then a fixed tree).
float Dot(const float* a, const float* b, int64_t n);

// out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight      x, out: (T, H); weight: (H).
// out may equal x.
void RmsNorm(const float* x, const float* weight, int64_t T, int64_t H, float eps, float* out);

// out[t, n] = <x[t, :], w[n, :]> + bias[n]      x: (T, K); w: (N, K); bias: (N) or null; out: (T,
// N). Split over n across the pool (null pool = inline).
void MatMul(ThreadPool* pool, const float* x, const float* w, const float* bias, int64_t T,
            int64_t K, int64_t N, float* out);

// Rotary position embedding, Llama convention (rotate_half): for each head and i < D/2, with
// angle = position * theta^(-2i/D):
//   out[i]       = x[i] cos - x[i + D/2] sin
//   out[i + D/2] = x[i + D/2] cos + x[i] sin
// x: (T, heads, D), in place; token t sits at position start_position + t.
void ApplyRope(float* x, int64_t T, int heads, int D, int start_position, float theta);
// The same in two halves, so the angles are computed once for every tensor at those positions:
// RopeAngles writes cos and sin, each (T, D/2); ApplyRopeAngles rotates x with them.
void RopeAngles(int64_t T, int D, int start_position, float theta, float* cos, float* sin);
void ApplyRopeAngles(float* x, int64_t T, int heads, int D, const float* cos, const float* sin);

// Causal grouped-query attention of one sequence. Query t (position start_position + t) attends to
// cache positions [0, start_position + t]; query head h reads kv head h / (Nq / Nkv); scale
// 1/sqrt(D). q, out: (T, Nq, D); keys/values come from `cache` at `layer` (already holding the new
// tokens). Split over (token, head) pairs across the pool.
void Attention(ThreadPool* pool, const float* q, const KvCache& cache, int layer, int64_t T,
               int start_position, int num_heads, int num_kv_heads, int D, float* out);

// gate[i] = SiLU(gate[i]) * up[i] for i < n (SwiGLU), in place in gate.
void SwiGlu(float* gate, const float* up, int64_t n);

// out[i] += y[i] for i < n.
void AddInPlace(float* out, const float* y, int64_t n);

}  // namespace engram

#endif  // ENGRAM_MODEL_CPU_OPS_H_
