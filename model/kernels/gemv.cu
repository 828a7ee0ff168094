// Few-row linear layers: out[T, N] = x[T, K] . w[N, K]^T for T <= kGemvMaxRows.
//
// Parallelisation: one warp per output column n, i.e. per row of w, for all T rows of x at once.
// The warp streams w[n, :] once, each lane reading 16 bytes (8 bf16) per load with four loads in
// flight, so a warp moves 2 KiB per round in whole 512-byte transactions; the loads are marked
// streaming (__ldcs: evict first) so the weights, read once per step, do not push x out of L1. x
// (T * K * 2 bytes, shared by every warp) is read through the read-only path and stays cached. Each
// lane keeps T f32 partial sums; a shuffle reduction ends the warp and lane 0 writes out[:, n].
// 256-thread CTAs hold 8 columns; N / 8 CTAs cover the output (N = 2,560 gives 320 CTAs, all
// resident at once on an H100). No shared memory, no atomics: the result does not depend on the
// launch.
//
// Arithmetic: every product and sum in f32 (bf16 inputs are exact in f32); the order is
// lane-strided partial sums then a butterfly, so it differs from cuBLASLt's and from the CPU's by
// f32 rounding only.
#include "model/kernels/gemv.cuh"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kInFlight = 4;

// The dot product of 8 bf16 pairs packed in two 16-byte words, added to acc.
__device__ __forceinline__ float Dot8(const uint4& a, const uint4& b, float acc) {
  const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(av[i] << 16), __uint_as_float(bv[i] << 16), acc);
    acc = fmaf(__uint_as_float(av[i] & 0xffff0000u), __uint_as_float(bv[i] & 0xffff0000u), acc);
  }
  return acc;
}

template <int kT>
__global__ void __launch_bounds__(kThreads) GemvKernel(const uint4* __restrict__ x,
                                                       const uint4* __restrict__ w, int N,
                                                       int words, float* __restrict__ out) {
  const int n = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (n >= N) return;
  const uint4* row = w + static_cast<int64_t>(n) * words;
  float acc[kT];
#pragma unroll
  for (int t = 0; t < kT; ++t) acc[t] = 0.0f;
  int c = lane;
  for (; c + (kInFlight - 1) * 32 < words; c += kInFlight * 32) {
    uint4 wv[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) wv[u] = __ldcs(row + c + u * 32);
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        acc[t] = Dot8(wv[u], __ldg(x + static_cast<int64_t>(t) * words + c + u * 32), acc[t]);
      }
    }
  }
  for (; c < words; c += 32) {
    const uint4 wv = __ldcs(row + c);
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      acc[t] = Dot8(wv, __ldg(x + static_cast<int64_t>(t) * words + c), acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < kT; ++t) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], offset);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int t = 0; t < kT; ++t) out[static_cast<int64_t>(t) * N + n] = acc[t];
  }
}

template <int kT>
void Launch(const uint4* x, const uint4* w, int N, int words, float* out, cudaStream_t stream) {
  const int blocks = (N + kWarpsPerBlock - 1) / kWarpsPerBlock;
  GemvKernel<kT><<<blocks, kThreads, 0, stream>>>(x, w, N, words, out);
}

}  // namespace

bool GemvSupports(const bf16* x, const bf16* w, int T, int K) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w);
  return T >= 1 && T <= kGemvMaxRows && K >= 8 && K % 8 == 0 && bits % 16 == 0;
}

absl::Status LaunchGemv(const bf16* x, const bf16* w, int T, int N, int K, float* out,
                        cudaStream_t stream) {
  if (!GemvSupports(x, w, T, K) || N < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Gemv: T=", T, " N=", N, " K=", K, " needs 1 <= T <= ", kGemvMaxRows,
        ", N >= 1, K a positive multiple of 8 and 16-byte aligned x and w"));
  }
  const auto* xv = reinterpret_cast<const uint4*>(x);
  const auto* wv = reinterpret_cast<const uint4*>(w);
  const int words = K / 8;
  switch (T) {
    case 1: Launch<1>(xv, wv, N, words, out, stream); break;
    case 2: Launch<2>(xv, wv, N, words, out, stream); break;
    case 3: Launch<3>(xv, wv, N, words, out, stream); break;
    case 4: Launch<4>(xv, wv, N, words, out, stream); break;
    case 5: Launch<5>(xv, wv, N, words, out, stream); break;
    case 6: Launch<6>(xv, wv, N, words, out, stream); break;
    case 7: Launch<7>(xv, wv, N, words, out, stream); break;
    default: Launch<8>(xv, wv, N, words, out, stream); break;
  }
  return LaunchStatus("Gemv");
}

}  // namespace engram::kernels
