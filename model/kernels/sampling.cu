// Next-token sampling (sampling.cuh has the semantics; SampleWithUniform of model/sampler.h is the
// CPU reference).
//
// Parallelisation and memory:
//   - Rows that need the descending order (temperature > 0 with top_k in (0, V) or top_p < 1) are
//     sorted by CUB's segmented radix sort: PrepareSortKernel writes (key, id) pairs into the
//     workspace, NaN as -inf and -0 as +0 (the CPU's Key order), and one segment per row; rows that
//     need no sort get an empty segment, so greedy and temperature-only rows cost the sort nothing
//     and never read what it wrote. Radix sort is stable, so equal logits keep ascending ids:
//     exactly the CPU's (key desc, id asc) order. The double-buffered form needs no copy of the
//     data beyond the two buffers; the buffer the sort did not end in holds the running sums.
//   - SampleRowKernel: one CTA of 1024 threads per row. Greedy rows: a strided argmax (lowest id
//     among equals, NaN as -inf) and a block reduction. Sampled rows: the max (first sorted key,
//     or the argmax), then weights exp((key - max) / temperature) in candidate order (id order, or
//     sorted), turned into running sums by a block-wide scan over tiles of 4096 with a carried
//     prefix; the sums go to the workspace, and the top_p cut (first running sum >= top_p *
//     total) and the draw (first running sum > uniform * kept mass) are block-wide "first index
//     where" searches over them (each thread stops at its first hit, so a peaked distribution
//     reads little).
// Rows are independent CTAs, so a batch of 1024 rows fills the GPU; a single row (decode with one
// sequence) is bound by one CTA's bandwidth, ~10 us at 150k ids for the sampled path, plus the
// sort when it is needed (one CTA per sorted row as well).
//
// Precision: the CPU sums in double, this in f32 (a tree inside each tile, then the carried
// prefix), so a draw within ~1e-6 relative of a boundary between two candidates (or a running sum
// within that of the top_p target) may pick the neighbour. The uniform is clamped below the kept
// mass, so rounding never runs past the last candidate with weight (the CPU's "last candidate"
// fallback).
//
// A row that needs the sort while args.any_sorted is false (the caller's flag is wrong) gets token
// -1 instead of a silently different sample.
#include "model/kernels/sampling.cuh"

#include <cfloat>
#include <climits>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kRowThreads = 1024;
constexpr int kItems = 4;  // consecutive candidates per thread in a scan tile
constexpr int kTile = kRowThreads * kItems;
constexpr int kPrepThreads = 256;
constexpr int kPrepPerThread = 8;

// NaN never wins and never breaks the order (the CPU's Key).
__device__ __forceinline__ float Key(float v) { return isnan(v) ? -INFINITY : v; }

__device__ __forceinline__ bool Greedy(const SampleParams& p, int V) {
  // !(t > 0) rather than t <= 0 so that a NaN temperature (rejected by ValidateSamplingParams)
  // cannot produce NaN weights.
  return !(p.temperature > 0.0f) || V <= 1;
}

// The CPU sorts only for top_k in (0, V) or top_p < 1; top_k >= V with top_p = 1 keeps id order.
__device__ __forceinline__ bool NeedsSort(const SampleParams& p, int V) {
  return !Greedy(p, V) && ((p.top_k > 0 && p.top_k < V) || p.top_p < 1.0f);
}

// One segment per row: [b V, (b + 1) V) when the row is sorted, empty otherwise.
__global__ void PrepareSortKernel(const float* __restrict__ logits,
                                  const SampleParams* __restrict__ params, int V,
                                  float* __restrict__ keys, int32_t* __restrict__ ids,
                                  int* __restrict__ begin, int* __restrict__ end) {
  const int b = blockIdx.y;
  const bool sort = NeedsSort(params[b], V);
  const int64_t base = static_cast<int64_t>(b) * V;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    begin[b] = static_cast<int>(base);
    end[b] = static_cast<int>(sort ? base + V : base);
  }
  if (!sort) return;
  for (int i = blockIdx.x * kPrepThreads + threadIdx.x; i < V; i += gridDim.x * kPrepThreads) {
    const float k = Key(logits[base + i]);
    keys[base + i] = k == 0.0f ? 0.0f : k;
    ids[base + i] = i;
  }
}

struct ArgMax {
  float key;
  int id;
};

// The larger key, the lower id among equals: a total order, so any reduction tree gives the same.
struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    return (a.key > b.key || (a.key == b.key && a.id < b.id)) ? a : b;
  }
};

struct MinOp {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};

// Carries the running sum from one scan tile to the next (called by the first warp of the CTA).
struct RunningTotal {
  float total;
  __device__ float operator()(float tile_sum) {
    const float before = total;
    total += tile_sum;
    return before;
  }
};

using BlockArgMax = cub::BlockReduce<ArgMax, kRowThreads>;
using BlockMin = cub::BlockReduce<int, kRowThreads>;
using BlockScan = cub::BlockScan<float, kRowThreads>;

struct RowShared {
  union {
    BlockArgMax::TempStorage argmax;
    BlockMin::TempStorage min;
    BlockScan::TempStorage scan;
  } temp;
  ArgMax argmax;
  int index;
};

// Argmax of Key(row[i]) over i < V, lowest id among equals; every thread gets the result.
__device__ ArgMax RowArgMax(const float* __restrict__ row, int V, RowShared& shared) {
  ArgMax best{-INFINITY, INT_MAX};  // threads without elements lose every comparison
  for (int i = threadIdx.x; i < V; i += kRowThreads) {
    const float k = Key(row[i]);
    // The thread's first element is always taken (it may be -inf); later ones only when larger,
    // so the thread keeps its lowest id among equals.
    if (k > best.key || best.id == INT_MAX) best = ArgMax{k, i};
  }
  const ArgMax result = BlockArgMax(shared.temp.argmax).Reduce(best, ArgMaxOp());
  if (threadIdx.x == 0) shared.argmax = result;
  __syncthreads();
  const ArgMax out = shared.argmax;
  __syncthreads();  // shared is reused by the caller
  return out;
}

// The lowest i < n with pred(cum[i]), or INT_MAX; every thread gets the result.
template <typename Pred>
__device__ int FirstIndex(const float* cum, int n, Pred pred, RowShared& shared) {
  int first = INT_MAX;
  for (int i = threadIdx.x; i < n; i += kRowThreads) {
    if (pred(cum[i])) {
      first = i;  // the thread's indices only grow: its first hit is its lowest
      break;
    }
  }
  const int result = BlockMin(shared.temp.min).Reduce(first, MinOp());
  if (threadIdx.x == 0) shared.index = result;
  __syncthreads();
  const int out = shared.index;
  __syncthreads();
  return out;
}

// cum[i] = weight(0) + ... + weight(i) for i < n, in f32; visible to the whole CTA on return.
template <typename Weight>
__device__ void RunningSums(int n, Weight weight, float* cum, RowShared& shared) {
  RunningTotal running{0.0f};
  for (int base = 0; base < n; base += kTile) {
    float w[kItems];
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = base + threadIdx.x * kItems + j;
      w[j] = i < n ? weight(i) : 0.0f;
    }
    BlockScan(shared.temp.scan).InclusiveSum(w, w, running);
    __syncthreads();  // the scan's storage is reused by the next tile
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = base + threadIdx.x * kItems + j;
      if (i < n) cum[i] = w[j];
    }
  }
  __syncthreads();  // every thread reads sums written by others
}

// sorted_keys/sorted_ids: the sort's output ([B, V], rows that were not sorted hold garbage), or
// null when nothing was sorted. cum_base: [B, V] f32 scratch for the running sums.
__global__ void __launch_bounds__(kRowThreads)
    SampleRowKernel(const float* __restrict__ logits, const SampleParams* __restrict__ params,
                    int V, const float* __restrict__ sorted_keys,
                    const int32_t* __restrict__ sorted_ids, float* cum_base,
                    int32_t* __restrict__ tokens) {
  __shared__ RowShared shared;
  const int b = blockIdx.x;
  const SampleParams p = params[b];
  const int64_t base = static_cast<int64_t>(b) * V;
  const float* row = logits + base;

  // Every branch below depends only on values that are the same for the whole CTA, so no thread
  // skips a barrier that others reach.
  if (Greedy(p, V)) {
    const ArgMax best = RowArgMax(row, V, shared);
    if (threadIdx.x == 0) tokens[b] = best.id;
    return;
  }
  const bool sort = NeedsSort(p, V);
  if (sort && sorted_keys == nullptr) {
    if (threadIdx.x == 0) tokens[b] = -1;
    return;
  }

  float* cum = cum_base + base;
  const float temperature = p.temperature;
  int n;
  if (sort) {
    const float* keys = sorted_keys + base;
    const float max_key = keys[0];
    // +inf present, or nothing but -inf/NaN: the CPU falls back to ArgMax, which is the first
    // sorted id (stable order: the lowest id holding the largest key).
    if (!isfinite(max_key)) {
      if (threadIdx.x == 0) tokens[b] = sorted_ids[base];
      return;
    }
    n = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
    RunningSums(
        n, [&](int i) { return expf((keys[i] - max_key) / temperature); }, cum, shared);
  } else {
    const ArgMax best = RowArgMax(row, V, shared);
    if (!isfinite(best.key)) {
      if (threadIdx.x == 0) tokens[b] = best.id;
      return;
    }
    const float max_key = best.key;
    n = V;
    RunningSums(
        n, [&](int i) { return expf((Key(row[i]) - max_key) / temperature); }, cum, shared);
  }

  // The largest candidate has weight exp(0) = 1, so the mass is >= 1 and finite.
  const float total = cum[n - 1];
  int kept = n;
  float mass = total;
  if (p.top_p < 1.0f) {
    // top_p <= 1, so target <= total = cum[n - 1]: some index qualifies.
    const float target = p.top_p * total;
    const int last = FirstIndex(
        cum, n, [&](float c) { return c >= target; }, shared);
    kept = (last == INT_MAX ? n - 1 : last) + 1;
    mass = cum[kept - 1];
  }
  float threshold = p.uniform * mass;
  if (!(threshold < mass)) threshold = nextafterf(mass, 0.0f);  // uniform rounded up to 1
  int pick = FirstIndex(
      cum, kept, [&](float c) { return c > threshold; }, shared);
  if (pick == INT_MAX) pick = kept - 1;  // cannot happen: cum[kept - 1] = mass > threshold
  if (threadIdx.x == 0) tokens[b] = sort ? sorted_ids[base + pick] : pick;
}

size_t AlignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Byte offsets of the workspace's parts; the CUB temporary storage is last.
struct Layout {
  size_t keys[2];
  size_t ids[2];
  size_t begin;
  size_t end;
  size_t temp;
};

Layout MakeLayout(int B, int V) {
  const size_t n = static_cast<size_t>(B) * V;
  Layout l;
  size_t at = 0;
  for (int i = 0; i < 2; ++i) {
    l.keys[i] = at;
    at += AlignUp(n * sizeof(float));
  }
  for (int i = 0; i < 2; ++i) {
    l.ids[i] = at;
    at += AlignUp(n * sizeof(int32_t));
  }
  l.begin = at;
  at += AlignUp(B * sizeof(int));
  l.end = at;
  at += AlignUp(B * sizeof(int));
  l.temp = at;
  return l;
}

// CUB's temporary storage for B segments within B * V items; a size query only (null storage),
// nothing runs on the device.
cudaError_t SortTempBytes(int B, int V, size_t* bytes) {
  cub::DoubleBuffer<float> keys(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> ids(nullptr, nullptr);
  *bytes = 0;
  return cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, *bytes, keys, ids, B * V, B, static_cast<const int*>(nullptr),
      static_cast<const int*>(nullptr), 0, 32);
}

bool ShapeOk(int B, int V) {
  return B >= 1 && V >= 1 && B <= 65535 && static_cast<int64_t>(B) * V <= INT_MAX;
}

}  // namespace

size_t SampleWorkspaceBytes(int B, int V) {
  if (!ShapeOk(B, V)) return 0;
  size_t temp_bytes = 0;
  if (SortTempBytes(B, V, &temp_bytes) != cudaSuccess) {
    cudaGetLastError();
    temp_bytes = size_t{64} << 20;  // LaunchSample reports the failing query itself
  }
  return MakeLayout(B, V).temp + AlignUp(temp_bytes > 0 ? temp_bytes : 1);
}

absl::Status LaunchSample(const SampleArgs& a, cudaStream_t stream) {
  if (a.B == 0) return absl::OkStatus();
  if (!ShapeOk(a.B, a.V)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: need 1 <= B <= 65535, V >= 1 and B * V <= 2^31 - 1; got B = ", a.B,
                     ", V = ", a.V));
  }
  if (a.logits == nullptr || a.params == nullptr || a.tokens == nullptr || a.workspace == nullptr) {
    return absl::InvalidArgumentError(
        "sample: null logits, params, tokens or workspace (SampleWorkspaceBytes(B, V) bytes)");
  }
  const Layout l = MakeLayout(a.B, a.V);
  char* ws = static_cast<char*>(a.workspace);
  float* keys[2] = {reinterpret_cast<float*>(ws + l.keys[0]),
                    reinterpret_cast<float*>(ws + l.keys[1])};
  int32_t* ids[2] = {reinterpret_cast<int32_t*>(ws + l.ids[0]),
                     reinterpret_cast<int32_t*>(ws + l.ids[1])};
  int* begin = reinterpret_cast<int*>(ws + l.begin);
  int* end = reinterpret_cast<int*>(ws + l.end);

  const float* sorted_keys = nullptr;
  const int32_t* sorted_ids = nullptr;
  float* cum = keys[0];
  if (a.any_sorted) {
    const int per_block = kPrepThreads * kPrepPerThread;
    const dim3 grid((a.V + per_block - 1) / per_block, a.B);
    PrepareSortKernel<<<grid, kPrepThreads, 0, stream>>>(a.logits, a.params, a.V, keys[0], ids[0],
                                                         begin, end);
    absl::Status st = LaunchStatus("sample: sort preparation");
    if (!st.ok()) return st;
    size_t temp_bytes = 0;
    cudaError_t err = SortTempBytes(a.B, a.V, &temp_bytes);
    if (err == cudaSuccess) {
      cub::DoubleBuffer<float> key_buffers(keys[0], keys[1]);
      cub::DoubleBuffer<int32_t> id_buffers(ids[0], ids[1]);
      err = cub::DeviceSegmentedRadixSort::SortPairsDescending(
          ws + l.temp, temp_bytes, key_buffers, id_buffers, a.B * a.V, a.B,
          static_cast<const int*>(begin), static_cast<const int*>(end), 0, 32, stream);
      // The buffer the sort ended in is chosen on the host (a fixed number of passes).
      sorted_keys = key_buffers.Current();
      sorted_ids = id_buffers.Current();
      cum = key_buffers.Alternate();
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      return absl::InternalError(
          absl::StrCat("sample: segmented radix sort: ", cudaGetErrorString(err)));
    }
  }
  SampleRowKernel<<<a.B, kRowThreads, 0, stream>>>(a.logits, a.params, a.V, sorted_keys, sorted_ids,
                                                   cum, a.tokens);
  return LaunchStatus("sample");
}

}  // namespace engram::kernels
