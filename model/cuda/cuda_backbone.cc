#include "model/cuda/cuda_backbone.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "model/cuda/device_buffer.h"
#include "model/cuda/gemm.h"
#include "model/engram_module.h"
#include "model/hot_slot_map.h"
#include "model/kernels/attention.cuh"
#include "model/kernels/attention_generic.cuh"
#include "model/kernels/embedding.cuh"
#include "model/kernels/engram_gather.cuh"
#include "model/kernels/engram_ops.cuh"
#include "model/kernels/rms_norm.cuh"
#include "model/kernels/rope.cuh"
#include "model/kernels/row_gather.cuh"
#include "model/kernels/sampling.cuh"
#include "model/kernels/swiglu.cuh"
#include "model/model.h"
#include "model/sampler.h"

namespace engram {
namespace {

using kernels::bf16;

#define CUDA_RETURN_IF_ERROR(expr, what) ENGRAM_RETURN_IF_ERROR(CudaStatus((expr), (what)))

// Decode batch sizes that get their own captured graph; a decode step of B sequences replays the
// smallest bucket >= B with the rest padded.
std::vector<int> GraphBuckets(int max_batch) {
  std::vector<int> b = {1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128};
  for (int s = 160; s <= 256; s += 32) b.push_back(s);
  for (int s = 320; s <= 1024; s += 64) b.push_back(s);
  std::vector<int> out;
  for (int s : b) {
    if (s < max_batch) out.push_back(s);
  }
  out.push_back(max_batch);
  return out;
}

// f32 -> bf16 (round to nearest even) over many threads: a 4B model has 4e9 values.
std::vector<uint16_t> ToBf16Parallel(const float* src, size_t n) {
  std::vector<uint16_t> out(n);
  const size_t threads = std::max<size_t>(1, std::min<size_t>(16, n / (1 << 20)));
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const size_t begin = n * t / threads, end = n * (t + 1) / threads;
      for (size_t i = begin; i < end; ++i) out[i] = F32ToBf16(src[i]);
    });
  }
  for (auto& th : pool) th.join();
  return out;
}

// Pinned host memory, freed with its owner.
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&&) = delete;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  absl::Status Allocate(size_t n) {
    if (n == 0) n = 1;
    CUDA_RETURN_IF_ERROR(cudaMallocHost(&data_, n * sizeof(T)), "cudaMallocHost");
    size_ = n;
    return absl::OkStatus();
  }
  T* get() { return data_; }
  size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Host memory registered with cudaHostRegister, unregistered with its owner.
class HostRegistration {
 public:
  HostRegistration() = default;
  ~HostRegistration() {
    if (ptr_ != nullptr) cudaHostUnregister(ptr_);
  }
  HostRegistration(HostRegistration&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)) {}
  HostRegistration& operator=(HostRegistration&&) = delete;
  HostRegistration(const HostRegistration&) = delete;
  HostRegistration& operator=(const HostRegistration&) = delete;
  void Set(void* ptr) { ptr_ = ptr; }

 private:
  void* ptr_ = nullptr;
};

}  // namespace

// ---- Sequence state -----------------------------------------------------------------------------

struct CudaBackbone::Impl {
  // ---- Weights (device) ----
  struct Layer {
    DeviceBuffer<bf16> qkv;                     // [(Nq + 2 Nkv) D, H]
    DeviceBuffer<float> qkv_bias;               // [(Nq + 2 Nkv) D] or empty
    DeviceBuffer<bf16> o;                       // [H, Nq D]
    DeviceBuffer<float> o_bias;                 // [H] or empty
    DeviceBuffer<bf16> gate_up;                 // [2 I, H]
    DeviceBuffer<bf16> down;                    // [H, I]
    DeviceBuffer<float> input_norm, post_norm;  // [H]
  };
  struct Engram {
    int layer = 0;
    int d_mem = 0;
    int kernel_size = 0;
    int dilation = 1;
    DeviceBuffer<bf16> vk;  // [2 H, d_mem]: value_proj rows then key_projs.0 rows
    DeviceBuffer<float> value_bias, key_bias, key_norm, query_norm, conv_norm, conv_weight;
    // Per step: the rows (host staging, device f32 and bf16) and the conv's normalised inputs.
    PinnedBuffer<float> staging;  // [max_tokens, d_mem]
    DeviceBuffer<float> rows;
    DeviceBuffer<bf16> rows_bf16;
    DeviceBuffer<float> normed;  // [max_tokens, H]
    DeviceBuffer<float> rings;   // [ring_slots, R, H]; R = (K - 1) * dilation
    int ring_rows = 0;
    // Rows gathered by id (EngramDeviceTable; by_id false without one): the table as the device
    // reads it (mapped host rows, or hbm_table), the HBM hot-row cache (slot map + pool), the
    // step's ids, and the per-source counters of the step and since creation.
    bool by_id = false;
    RowDType dtype = RowDType::kBF16;
    int head_dim = 0, columns = 0;
    uint32_t row_bytes = 0;
    uint64_t table_rows = 0, table_stride = 0;
    const uint8_t* table = nullptr;
    HostRegistration registered;  // host rows this backbone registered with the driver
    DeviceBuffer<uint8_t> hbm_table, pool;
    DeviceBuffer<HotSlot> slot_map;
    uint64_t cache_rows = 0;
    PinnedBuffer<uint64_t> ids_host;  // [max_tokens * columns]
    DeviceBuffer<uint64_t> ids;
    DeviceBuffer<unsigned int> counters;  // [kRowSources] of this step
    PinnedBuffer<unsigned int> counters_host;
    bool counted = false;  // counters_host holds this step's counts (read after the step's sync)
    EngramRowCounts counts;
  };
  DeviceBuffer<bf16> embed;    // [V, H]
  DeviceBuffer<bf16> lm_head;  // [V, H] (empty when tied: embed is used)
  DeviceBuffer<float> final_norm;
  std::vector<Layer> layers;
  std::vector<Engram> engram;
  std::vector<int> engram_of_layer;  // [layer] -> index into engram or -1
  DeviceBuffer<float> rope_cos, rope_sin;

  // ---- KV cache ----
  DeviceBuffer<bf16> kv;  // [layers][2][blocks][Nkv][block_tokens][D]
  int64_t num_blocks = 0;
  size_t kv_layer_stride = 0;  // elements between one layer's K pool and the next's
  std::vector<int32_t> free_blocks;
  std::vector<int> free_rings;

  // ---- Activations ----
  DeviceBuffer<float> h, qkv_out, proj, gate_up_out, vk_out, u, logits;
  DeviceBuffer<bf16> xn, q, att, act, last;
  DeviceBuffer<uint8_t> attention_ws, sample_ws;

  // ---- Step metadata: one pinned block copied to one device block per step ----
  struct Meta {
    size_t tokens, positions, slots, block_tables, context_lens, q_offsets, last_rows, params,
        sampled, row_offsets, start_positions, item_of_row, histories, live, bytes;
  } meta{};
  PinnedBuffer<uint8_t> meta_host;
  DeviceBuffer<uint8_t> meta_device;
  int max_blocks_per_seq = 0;

  std::unique_ptr<Gemm> gemm;
  cudaStream_t stream = nullptr;
  int sm_count = 0;

  // Captured graphs: [bucket][segment].
  std::vector<int> buckets;
  std::map<int, std::vector<cudaGraphExec_t>> graphs;

  template <typename T>
  T* host(size_t offset) {
    return reinterpret_cast<T*>(meta_host.get() + offset);
  }
  template <typename T>
  T* dev(size_t offset) {
    return reinterpret_cast<T*>(meta_device.get() + offset);
  }
  bf16* k_cache(int layer) { return kv.get() + layer * kv_layer_stride; }
  bf16* v_cache(int layer) { return kv.get() + layer * kv_layer_stride + kv_layer_stride / 2; }
};

class CudaSequenceState : public SequenceState {
 public:
  CudaSequenceState(CudaBackbone* owner, int max_tokens)
      : SequenceState(max_tokens), owner_(owner) {}
  ~CudaSequenceState() override {
    CudaBackbone::Impl& impl = *owner_->impl_;
    impl.free_blocks.insert(impl.free_blocks.end(), blocks_.begin(), blocks_.end());
    if (ring_slot_ >= 0) impl.free_rings.push_back(ring_slot_);
  }

 private:
  friend class CudaBackbone;
  CudaBackbone* owner_;
  std::vector<int32_t> blocks_;
  int ring_slot_ = -1;
};

namespace {

// The shape of one step as the kernels see it.
struct StepShape {
  int T = 0;   // rows (padded rows included)
  int Bd = 0;  // decode items (rows [0, Bd))
  int Bp = 0;  // prefill items (rows [Bd, T))
  int B = 0;   // items = Bd + Bp
  int max_q_len = 0;
  int splits = 1;
};

}  // namespace

// ---- Construction
// ---------------------------------------------------------------------------------

CudaBackbone::CudaBackbone(const ModelConfig& config, const CudaBackboneOptions& options)
    : config_(config), options_(options), impl_(std::make_unique<Impl>()) {}

CudaBackbone::~CudaBackbone() {
  if (impl_) {
    for (auto& [bucket, segs] : impl_->graphs) {
      for (cudaGraphExec_t g : segs) {
        if (g) cudaGraphExecDestroy(g);
      }
    }
    if (impl_->stream) cudaStreamDestroy(impl_->stream);
  }
}

absl::StatusOr<std::unique_ptr<CudaBackbone>> CudaBackbone::Create(
    const Model& model, const CudaBackboneOptions& options) {
  return Create(model.config(), model.weights(), model.engram_modules(), options);
}

namespace {

absl::StatusOr<DeviceBuffer<bf16>> UploadBf16(const std::vector<const Weight*>& parts) {
  size_t n = 0;
  for (const Weight* w : parts) {
    size_t count = 1;
    for (int64_t d : w->shape) count *= static_cast<size_t>(d);
    n += count;
  }
  ENGRAM_ASSIGN_OR_RETURN(DeviceBuffer<bf16> out, DeviceBuffer<bf16>::Create(n));
  size_t at = 0;
  for (const Weight* w : parts) {
    size_t count = 1;
    for (int64_t d : w->shape) count *= static_cast<size_t>(d);
    std::vector<uint16_t> bits = ToBf16Parallel(w->data, count);
    CUDA_RETURN_IF_ERROR(cudaMemcpy(out.get() + at, bits.data(), count * 2, cudaMemcpyHostToDevice),
                         "upload");
    at += count;
  }
  return out;
}

absl::StatusOr<DeviceBuffer<float>> UploadF32(const float* data, size_t n) {
  return DeviceBuffer<float>::FromHost(absl::MakeConstSpan(data, n));
}

// Concatenated optional biases; empty when every part is absent. Absent parts are zeros.
absl::StatusOr<DeviceBuffer<float>> UploadBiases(
    const std::vector<std::pair<const Weight*, int64_t>>& parts) {
  bool any = false;
  for (auto& [w, n] : parts) any |= !w->empty();
  if (!any) return DeviceBuffer<float>();
  std::vector<float> all;
  for (auto& [w, n] : parts) {
    if (w->empty()) {
      all.insert(all.end(), n, 0.0f);
    } else {
      all.insert(all.end(), w->data, w->data + n);
    }
  }
  return DeviceBuffer<float>::FromHost(all);
}

size_t Align(size_t v) { return (v + 255) / 256 * 256; }

}  // namespace

namespace {

// Inserts `key` -> `slot` into a map that does not hold `key` and has an empty entry.
void HotSlotInsert(HotSlot* map, uint64_t mask, uint64_t key, uint32_t slot) {
  uint64_t i = HotSlotHome(key, mask);
  uint32_t probe = 0;
  while (map[i].row != kEmptyRow) i = (i + 1) & mask, ++probe;
  map[i] = HotSlot{key, slot, probe};
}

// Makes layer e's table readable by id on the device (EngramDeviceTable): maps its host rows, copies
// them whole into HBM when asked, and fills the HBM hot-row cache from the hot list by gathering
// those rows on the device. Sizes the per-step id buffers for `max_tokens` tokens.
absl::Status SetUpDeviceTable(const EngramDeviceTable& t, int max_tokens,
                              CudaBackbone::Impl::Engram& e, cudaStream_t stream) {
  if (t.dtype == RowDType::kF16) {
    return absl::UnimplementedError("Engram tables on the GPU are f32, bf16 or fp8_e4m3_e8m0");
  }
  if (t.head_dim <= 0 || e.d_mem % t.head_dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Engram table of layer ", e.layer, ": head_dim ",
                                                   t.head_dim, " does not divide d_mem ", e.d_mem));
  }
  ENGRAM_ASSIGN_OR_RETURN(const size_t row_bytes, RowBytes(t.dtype, t.head_dim));
  if (t.host == nullptr || t.rows == 0 || t.stride < row_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Engram table of layer ", e.layer, ": needs host rows, rows > 0 and a stride >= ", row_bytes));
  }
  e.by_id = true;
  e.dtype = t.dtype;
  e.head_dim = t.head_dim;
  e.columns = e.d_mem / t.head_dim;
  e.row_bytes = static_cast<uint32_t>(row_bytes);
  e.table_rows = t.rows;
  e.table_stride = t.stride;
  // Host rows, mapped read-only. Memory the driver already knows (cudaHostAlloc, or registered by
  // someone else) is used as it is: registering it again is an error (cudaErrorInvalidValue for
  // cudaHostAlloc memory, measured on an H100 with driver 580).
  auto* host = const_cast<uint8_t*>(t.host);
  const size_t host_bytes = (t.rows - 1) * t.stride + row_bytes;
  cudaPointerAttributes attributes{};
  const bool pinned = cudaPointerGetAttributes(&attributes, host) == cudaSuccess &&
                      attributes.type == cudaMemoryTypeHost;
  cudaGetLastError();  // pageable memory may report an error on older drivers
  if (!pinned) {
    const cudaError_t reg =
        cudaHostRegister(host, host_bytes, cudaHostRegisterMapped | cudaHostRegisterReadOnly);
    if (reg == cudaErrorHostMemoryAlreadyRegistered) {
      cudaGetLastError();
    } else {
      CUDA_RETURN_IF_ERROR(reg, "register the Engram table's host rows");
      e.registered.Set(host);
    }
  }
  void* mapped = nullptr;
  CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(&mapped, host, 0), "map the Engram table");
  e.table = static_cast<const uint8_t*>(mapped);
  if (t.whole_in_hbm) {
    ENGRAM_ASSIGN_OR_RETURN(e.hbm_table, DeviceBuffer<uint8_t>::Create(t.rows * row_bytes));
    CUDA_RETURN_IF_ERROR(cudaMemcpy2D(e.hbm_table.get(), row_bytes, host, t.stride, row_bytes,
                                      t.rows, cudaMemcpyHostToDevice),
                         "copy the Engram table to HBM");
    e.table = e.hbm_table.get();
    e.table_stride = row_bytes;
  }
  // The HBM hot-row cache: the first distinct, valid hot rows, slot k holding the k-th.
  const uint64_t slots = t.hbm_cache_bytes / row_bytes;
  if (slots > 0) {
    uint64_t entries = 1;
    while (entries < 2 * slots) entries *= 2;
    std::vector<HotSlot> map(entries, HotSlot{kEmptyRow, 0, 0});
    std::vector<uint64_t> cached;
    for (uint64_t row : t.hot_rows) {
      if (cached.size() == slots) break;
      if (row >= t.rows || HotSlotLookup(map.data(), entries - 1, row) != kHotSlotMiss) continue;
      HotSlotInsert(map.data(), entries - 1, row, static_cast<uint32_t>(cached.size()));
      cached.push_back(row);
    }
    ENGRAM_ASSIGN_OR_RETURN(e.pool, DeviceBuffer<uint8_t>::Create(slots * row_bytes));
    ENGRAM_ASSIGN_OR_RETURN(e.slot_map, DeviceBuffer<HotSlot>::FromHost(map));
    constexpr size_t kChunk = size_t{1} << 20;
    ENGRAM_ASSIGN_OR_RETURN(DeviceBuffer<uint64_t> chunk_ids,
                            DeviceBuffer<uint64_t>::Create(std::min(kChunk, std::max<size_t>(1, cached.size()))));
    for (size_t at = 0; at < cached.size(); at += kChunk) {
      const size_t n = std::min(kChunk, cached.size() - at);
      ENGRAM_RETURN_IF_ERROR(chunk_ids.Upload(absl::MakeConstSpan(cached).subspan(at, n)));
      kernels::EngramGatherArgs g;
      g.table = e.table;
      g.table_rows = e.table_rows;
      g.row_stride = e.table_stride;
      g.row_bytes = e.row_bytes;
      g.row_ids = chunk_ids.get();
      g.n = static_cast<uint32_t>(n);
      g.out = e.pool.get() + at * row_bytes;
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchEngramGather(g, stream));
      CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "fill the HBM row cache");
    }
    e.cache_rows = cached.size();
  }
  const size_t max_ids = static_cast<size_t>(max_tokens) * e.columns;
  ENGRAM_RETURN_IF_ERROR(e.ids_host.Allocate(max_ids));
  std::memset(e.ids_host.get(), 0, max_ids * sizeof(uint64_t));
  ENGRAM_ASSIGN_OR_RETURN(e.ids, DeviceBuffer<uint64_t>::Create(max_ids));
  ENGRAM_ASSIGN_OR_RETURN(e.counters, DeviceBuffer<unsigned int>::Create(kernels::kRowSources));
  return e.counters_host.Allocate(kernels::kRowSources);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackbone>> CudaBackbone::Create(
    const ModelConfig& config, const BackboneWeights& weights,
    const std::vector<const EngramModule*>& engram_modules, const CudaBackboneOptions& options) {
  if (!(options.gpu_memory_fraction > 0 && options.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError("gpu_memory_fraction must be in (0, 1]");
  }
  if (options.max_batch_sequences < 1 || options.max_step_tokens < options.max_batch_sequences) {
    return absl::InvalidArgumentError(
        "need max_batch_sequences >= 1 and max_step_tokens >= max_batch_sequences");
  }
  if (options.block_tokens != 16 && options.block_tokens != 32 && options.block_tokens != 64) {
    return absl::InvalidArgumentError("block_tokens must be 16, 32 or 64");
  }
  if (config.head_dim % 2 != 0 || config.head_dim > 256) {
    return absl::UnimplementedError(absl::StrCat(
        "the CUDA backbone needs an even head_dim <= 256, the model has ", config.head_dim));
  }
  if (engram_modules.size() != config.engram.layer_ids.size()) {
    return absl::InvalidArgumentError("one Engram module per Engram layer is needed");
  }
  if (!options.engram_tables.empty() && options.engram_tables.size() != engram_modules.size()) {
    return absl::InvalidArgumentError("engram_tables: none, or one per Engram layer");
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device), "cudaSetDevice");
  std::unique_ptr<CudaBackbone> b(new CudaBackbone(config, options));
  Impl& m = *b->impl_;
  cudaDeviceProp prop{};
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options.device), "device properties");
  b->device_name_ = absl::StrCat("cuda:", options.device, " ", prop.name);
  m.sm_count = prop.multiProcessorCount;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "stream");
  ENGRAM_ASSIGN_OR_RETURN(m.gemm, Gemm::Create(options.gemv));

  const int64_t V = config.vocab_size, H = config.hidden_size, I = config.intermediate_size;
  const int64_t Q = config.q_width(), KV = config.kv_width();
  const int64_t QKV = Q + 2 * KV;
  const int L = config.num_hidden_layers, D = config.head_dim;
  const int T = options.max_step_tokens, B = options.max_batch_sequences;

  // ---- Weights ----
  const absl::Time start = absl::Now();
  ENGRAM_ASSIGN_OR_RETURN(m.embed, UploadBf16({&weights.embed_tokens}));
  if (!config.tie_word_embeddings && weights.lm_head.data != weights.embed_tokens.data) {
    ENGRAM_ASSIGN_OR_RETURN(m.lm_head, UploadBf16({&weights.lm_head}));
  }
  ENGRAM_ASSIGN_OR_RETURN(m.final_norm, UploadF32(weights.norm.data, H));
  m.layers.resize(L);
  for (int l = 0; l < L; ++l) {
    const LayerWeights& w = weights.layers[l];
    Impl::Layer& d = m.layers[l];
    ENGRAM_ASSIGN_OR_RETURN(d.qkv, UploadBf16({&w.q_proj, &w.k_proj, &w.v_proj}));
    ENGRAM_ASSIGN_OR_RETURN(d.qkv_bias,
                            UploadBiases({{&w.q_bias, Q}, {&w.k_bias, KV}, {&w.v_bias, KV}}));
    ENGRAM_ASSIGN_OR_RETURN(d.o, UploadBf16({&w.o_proj}));
    ENGRAM_ASSIGN_OR_RETURN(d.o_bias, UploadBiases({{&w.o_bias, H}}));
    ENGRAM_ASSIGN_OR_RETURN(d.gate_up, UploadBf16({&w.gate_proj, &w.up_proj}));
    ENGRAM_ASSIGN_OR_RETURN(d.down, UploadBf16({&w.down_proj}));
    ENGRAM_ASSIGN_OR_RETURN(d.input_norm, UploadF32(w.input_layernorm.data, H));
    ENGRAM_ASSIGN_OR_RETURN(d.post_norm, UploadF32(w.post_attention_layernorm.data, H));
  }
  m.engram_of_layer.assign(L, -1);
  const int ring_slots = B + 64;
  for (size_t li = 0; li < engram_modules.size(); ++li) {
    const EngramModuleWeights& w = engram_modules[li]->weights();
    if (w.hc_mult != 1) return absl::UnimplementedError("the CUDA backbone needs hc_mult = 1");
    Impl::Engram e;
    e.layer = config.engram.layer_ids[li];
    e.d_mem = w.d_mem;
    e.kernel_size = w.kernel_size;
    e.dilation = w.dilation;
    m.engram_of_layer[e.layer] = static_cast<int>(li);
    std::vector<float> vk(w.value_proj_weight);
    vk.insert(vk.end(), w.key_proj_weight.begin(), w.key_proj_weight.begin() + H * w.d_mem);
    std::vector<uint16_t> bits = ToBf16Parallel(vk.data(), vk.size());
    ENGRAM_ASSIGN_OR_RETURN(e.vk, DeviceBuffer<bf16>::Create(bits.size()));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(e.vk.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice), "upload");
    ENGRAM_ASSIGN_OR_RETURN(e.value_bias, UploadF32(w.value_proj_bias.data(), H));
    ENGRAM_ASSIGN_OR_RETURN(e.key_bias, UploadF32(w.key_proj_bias.data(), H));
    ENGRAM_ASSIGN_OR_RETURN(e.key_norm, UploadF32(w.key_norm_weight.data(), H));
    ENGRAM_ASSIGN_OR_RETURN(e.query_norm, UploadF32(w.query_norm_weight.data(), H));
    if (w.kernel_size > 0) {
      ENGRAM_ASSIGN_OR_RETURN(e.conv_norm, UploadF32(w.conv_norm_weight.data(), H));
      ENGRAM_ASSIGN_OR_RETURN(e.conv_weight, UploadF32(w.conv_weight.data(), H * w.kernel_size));
      e.ring_rows = (w.kernel_size - 1) * w.dilation;
      ENGRAM_ASSIGN_OR_RETURN(e.rings, DeviceBuffer<float>::Create(static_cast<size_t>(ring_slots) *
                                                                   std::max(1, e.ring_rows) * H));
    }
    ENGRAM_RETURN_IF_ERROR(e.staging.Allocate(static_cast<size_t>(T) * e.d_mem));
    std::memset(e.staging.get(), 0, e.staging.size() * sizeof(float));
    ENGRAM_ASSIGN_OR_RETURN(e.rows, DeviceBuffer<float>::Create(static_cast<size_t>(T) * e.d_mem));
    ENGRAM_ASSIGN_OR_RETURN(e.rows_bf16,
                            DeviceBuffer<bf16>::Create(static_cast<size_t>(T) * e.d_mem));
    ENGRAM_ASSIGN_OR_RETURN(e.normed, DeviceBuffer<float>::Create(static_cast<size_t>(T) * H));
    if (!options.engram_tables.empty()) {
      ENGRAM_RETURN_IF_ERROR(SetUpDeviceTable(options.engram_tables[li], T, e, m.stream));
    }
    m.engram.push_back(std::move(e));
  }
  for (int s = 0; s < ring_slots; ++s) m.free_rings.push_back(ring_slots - 1 - s);
  std::vector<float> cos, sin;
  kernels::RopeTable(config.max_position_embeddings, D, config.rope_theta, &cos, &sin);
  ENGRAM_ASSIGN_OR_RETURN(m.rope_cos, DeviceBuffer<float>::FromHost(cos));
  ENGRAM_ASSIGN_OR_RETURN(m.rope_sin, DeviceBuffer<float>::FromHost(sin));

  // ---- Activations and workspaces, sized for the largest step ----
  int64_t max_d_mem = 0;
  for (const auto& e : m.engram) max_d_mem = std::max<int64_t>(max_d_mem, e.d_mem);
  ENGRAM_ASSIGN_OR_RETURN(m.h, DeviceBuffer<float>::Create(T * H));
  ENGRAM_ASSIGN_OR_RETURN(m.qkv_out, DeviceBuffer<float>::Create(T * QKV));
  ENGRAM_ASSIGN_OR_RETURN(m.proj, DeviceBuffer<float>::Create(T * H));
  ENGRAM_ASSIGN_OR_RETURN(m.gate_up_out, DeviceBuffer<float>::Create(T * 2 * I));
  ENGRAM_ASSIGN_OR_RETURN(m.logits, DeviceBuffer<float>::Create(B * V));
  ENGRAM_ASSIGN_OR_RETURN(m.xn, DeviceBuffer<bf16>::Create(T * H));
  ENGRAM_ASSIGN_OR_RETURN(m.q, DeviceBuffer<bf16>::Create(T * Q));
  ENGRAM_ASSIGN_OR_RETURN(m.att, DeviceBuffer<bf16>::Create(T * Q));
  ENGRAM_ASSIGN_OR_RETURN(m.act, DeviceBuffer<bf16>::Create(T * I));
  ENGRAM_ASSIGN_OR_RETURN(m.last, DeviceBuffer<bf16>::Create(B * H));
  if (!m.engram.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(m.vk_out, DeviceBuffer<float>::Create(T * 2 * H));
    ENGRAM_ASSIGN_OR_RETURN(m.u, DeviceBuffer<float>::Create(T * H));
  }
  kernels::AttentionShape shape{config.num_attention_heads, config.num_key_value_heads, D,
                                options.block_tokens, 1.0f / std::sqrt(static_cast<float>(D))};
  ENGRAM_ASSIGN_OR_RETURN(m.attention_ws,
                          DeviceBuffer<uint8_t>::Create(std::max<size_t>(
                              1, kernels::DecodeAttentionWorkspaceBytes(B, shape, 16))));
  ENGRAM_ASSIGN_OR_RETURN(
      m.sample_ws, DeviceBuffer<uint8_t>::Create(
                       std::max<size_t>(1, kernels::SampleWorkspaceBytes(B, static_cast<int>(V)))));

  // ---- Step metadata ----
  m.max_blocks_per_seq =
      (config.max_position_embeddings + options.block_tokens - 1) / options.block_tokens;
  Impl::Meta& mt = m.meta;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t o = at;
    at += Align(bytes);
    return o;
  };
  mt.tokens = take(T * 4);
  mt.positions = take(T * 4);
  mt.slots = take(T * 4);
  mt.block_tables = take(size_t(B) * m.max_blocks_per_seq * 4);
  mt.context_lens = take(B * 4);
  mt.q_offsets = take((B + 1) * 4);
  mt.last_rows = take(B * 4);
  mt.params = take(B * sizeof(kernels::SampleParams));
  mt.sampled = take(B * 4);
  mt.row_offsets = take((B + 1) * 4);
  mt.start_positions = take(B * 4);
  mt.item_of_row = take(T * 4);
  mt.histories = take(std::max<size_t>(1, m.engram.size()) * B * sizeof(float*));
  mt.live = take(B);
  mt.bytes = at;
  ENGRAM_RETURN_IF_ERROR(m.meta_host.Allocate(mt.bytes));
  std::memset(m.meta_host.get(), 0, mt.bytes);
  ENGRAM_ASSIGN_OR_RETURN(m.meta_device, DeviceBuffer<uint8_t>::Create(mt.bytes));

  // ---- KV cache: what is left of the budget ----
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize(), "synchronize");
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const double used = double(total_bytes - free_bytes);
  // Reserve room for cuBLASLt's and the graphs' own allocations.
  const double budget =
      options.gpu_memory_fraction * double(total_bytes) - used - 256.0 * (1 << 20);
  const size_t block_bytes = size_t(L) * 2 * KV * options.block_tokens * sizeof(bf16);
  const int64_t useful = int64_t(B) * m.max_blocks_per_seq + 1;
  m.num_blocks = std::min<int64_t>(useful, budget > 0 ? int64_t(budget / block_bytes) : 0);
  if (m.num_blocks < 2) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no room for a KV cache: the weights and activations take ", used / (1 << 20), " MiB of ",
        total_bytes / (1 << 20), " MiB (gpu_memory_fraction ", options.gpu_memory_fraction,
        "); lower max_step_tokens or raise the fraction"));
  }
  m.kv_layer_stride = size_t(2) * m.num_blocks * KV * options.block_tokens;
  ENGRAM_ASSIGN_OR_RETURN(m.kv, DeviceBuffer<bf16>::Create(m.kv_layer_stride * L));
  for (int64_t blk = m.num_blocks - 1; blk >= 1; --blk) m.free_blocks.push_back(int32_t(blk));
  m.buckets = GraphBuckets(B);
  ENGRAM_LOG(INFO)
          .With("device", b->device_name_)
          .With("weights_mib", b->weight_bytes() >> 20)
          .With("kv_blocks", m.num_blocks - 1)
          .With("kv_tokens", (m.num_blocks - 1) * options.block_tokens)
          .With("kv_mib", b->kv_cache_bytes() >> 20)
          .With("seconds", absl::ToDoubleSeconds(absl::Now() - start))
      << "CUDA backbone ready";
  return b;
}

size_t CudaBackbone::weight_bytes() const {
  const Impl& m = *impl_;
  size_t n = m.embed.bytes() + m.lm_head.bytes() + m.final_norm.bytes();
  for (const auto& l : m.layers) {
    n += l.qkv.bytes() + l.qkv_bias.bytes() + l.o.bytes() + l.o_bias.bytes() + l.gate_up.bytes() +
         l.down.bytes() + l.input_norm.bytes() + l.post_norm.bytes();
  }
  for (const auto& e : m.engram) n += e.vk.bytes();
  return n;
}

size_t CudaBackbone::kv_cache_bytes() const { return impl_->kv.bytes(); }

EngramRowCounts CudaBackbone::engram_row_counts(int li) const { return impl_->engram.at(li).counts; }

uint64_t CudaBackbone::hbm_cache_rows(int li) const { return impl_->engram.at(li).cache_rows; }

// ---- Sequences and blocks -----------------------------------------------------------------------

std::unique_ptr<SequenceState> CudaBackbone::NewSequence(int max_tokens) {
  max_tokens = std::clamp(max_tokens, 1, config_.max_position_embeddings);
  return std::make_unique<CudaSequenceState>(this, max_tokens);
}

KvCapacity CudaBackbone::kv_capacity() const {
  KvCapacity c;
  c.block_tokens = options_.block_tokens;
  c.total_blocks = impl_->num_blocks - 1;
  c.free_blocks = static_cast<int64_t>(impl_->free_blocks.size());
  return c;
}

int64_t CudaBackbone::BlocksNeeded(const SequenceState& sequence, int tokens) const {
  const auto& s = static_cast<const CudaSequenceState&>(sequence);
  const int64_t want =
      (int64_t(s.position()) + tokens + options_.block_tokens - 1) / options_.block_tokens;
  return std::max<int64_t>(0, want - static_cast<int64_t>(s.blocks_.size()));
}

absl::Status CudaBackbone::Reserve(SequenceState& sequence, int tokens) {
  auto& s = static_cast<CudaSequenceState&>(sequence);
  Impl& m = *impl_;
  if (s.position() + tokens > s.max_tokens()) {
    return absl::OutOfRangeError(absl::StrCat("the sequence holds at most ", s.max_tokens(),
                                              " tokens; ", s.position() + tokens, " do not fit"));
  }
  const bool needs_ring = !m.engram.empty() && m.engram.front().ring_rows > 0;
  const int64_t needed = BlocksNeeded(s, tokens);
  if (needed > static_cast<int64_t>(m.free_blocks.size())) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: ", needed, " blocks needed, ", m.free_blocks.size(), " free"));
  }
  if (needs_ring && s.ring_slot_ < 0) {
    if (m.free_rings.empty()) {
      return absl::ResourceExhaustedError("no free Engram conv history slot");
    }
    s.ring_slot_ = m.free_rings.back();
    m.free_rings.pop_back();
    for (Impl::Engram& e : m.engram) {
      const size_t n = static_cast<size_t>(e.ring_rows) * config_.hidden_size;
      CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(e.rings.get() + s.ring_slot_ * n, 0, n * sizeof(float), m.stream),
          "clear conv history");
    }
  }
  for (int64_t i = 0; i < needed; ++i) {
    s.blocks_.push_back(m.free_blocks.back());
    m.free_blocks.pop_back();
  }
  return absl::OkStatus();
}

// ---- The step
// -------------------------------------------------------------------------------------

namespace {

// The forward pass of one step, split into segments at the Engram layers: segment k runs the
// attention and MLP of layers [first, end) (and, for the last one, the head and the sampler);
// between segments the host hands the GPU an Engram layer's rows. Every launch of a segment goes
// to one stream, so a segment can be captured as a CUDA graph.
struct Forward {
  const ModelConfig& config;
  const CudaBackboneOptions& options;
  CudaBackbone::Impl& m;
  const StepShape& s;
  bool any_sorted = false;

  cudaStream_t stream() const { return m.stream; }

  // Segment boundaries: layer ids where an Engram module runs, plus the end.
  std::vector<int> Boundaries() const {
    std::vector<int> b;
    for (const auto& e : m.engram) {
      if (e.layer > 0) b.push_back(e.layer);
    }
    b.push_back(config.num_hidden_layers);
    std::sort(b.begin(), b.end());
    b.erase(std::unique(b.begin(), b.end()), b.end());
    return b;
  }

  // h += proj (the down projection of the last layer run), without a norm.
  absl::Status FlushResidual() {
    return kernels::LaunchAddRmsNorm(m.h.get(), m.proj.get(), nullptr, nullptr, config.rms_norm_eps,
                                     s.T, config.hidden_size, nullptr, stream());
  }

  absl::Status Segment(int first, int end, bool embed, bool head) {
    const int H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
    const int Q = config.q_width(), KV = config.kv_width(), QKV = Q + 2 * KV;
    const float eps = config.rms_norm_eps;
    const int T = s.T;
    CudaBackbone::Impl::Meta& mt = m.meta;
    if (embed) {
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchEmbedding(m.embed.get(), H, m.dev<int32_t>(mt.tokens),
                                                      T, m.h.get(), stream()));  // h: (T, H)
    }
    const kernels::AttentionShape shape{config.num_attention_heads, config.num_key_value_heads,
                                        config.head_dim, options.block_tokens,
                                        1.0f / std::sqrt(static_cast<float>(config.head_dim))};
    for (int l = first; l < end; ++l) {
      CudaBackbone::Impl::Layer& w = m.layers[l];
      // ---- Attention: h += o_proj(GQA(RoPE(q), RoPE(k), v)) of RMSNorm(h) ----
      // The previous layer's down projection is added here, fused with this layer's norm (a
      // segment starts with nothing pending: the one before flushed it).
      const bool pending = l > first;
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchAddRmsNorm(m.h.get(), pending ? m.proj.get() : nullptr,
                                                       nullptr, w.input_norm.get(), eps, T, H,
                                                       m.xn.get(), stream()));  // xn: (T, H)
      ENGRAM_RETURN_IF_ERROR(
          m.gemm->Run(m.xn.get(), w.qkv.get(), T, QKV, H, m.qkv_out.get(), stream()));  // (T, QKV)
      kernels::RopeKvAppendArgs rope;
      rope.qkv = m.qkv_out.get();
      rope.bias = w.qkv_bias.size() ? w.qkv_bias.get() : nullptr;
      rope.positions = m.dev<int32_t>(mt.positions);
      rope.slots = m.dev<int32_t>(mt.slots);
      rope.cos = m.rope_cos.get();
      rope.sin = m.rope_sin.get();
      rope.T = T;
      rope.num_heads = config.num_attention_heads;
      rope.num_kv_heads = config.num_key_value_heads;
      rope.head_dim = config.head_dim;
      rope.block_tokens = options.block_tokens;
      rope.q_out = m.q.get();
      rope.k_cache = m.k_cache(l);
      rope.v_cache = m.v_cache(l);
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchRopeKvAppend(rope, stream()));  // q: (T, Nq, D)
      const bool tensor_cores = config.head_dim == 64 || config.head_dim == 128;
      if (!tensor_cores) {
        // Narrow heads (test and demo models): one simple kernel for every row.
        kernels::GenericAttentionArgs a;
        a.q = m.q.get();
        a.out = m.att.get();
        a.k_cache = m.k_cache(l);
        a.v_cache = m.v_cache(l);
        a.block_tables = m.dev<int32_t>(mt.block_tables);
        a.max_blocks = m.max_blocks_per_seq;
        a.item_of_row = m.dev<int32_t>(mt.item_of_row);
        a.positions = m.dev<int32_t>(mt.positions);
        a.T = T;
        a.shape = shape;
        ENGRAM_RETURN_IF_ERROR(kernels::LaunchGenericAttention(a, stream()));  // att: (T, Nq D)
      }
      if (tensor_cores && s.Bd > 0) {
        kernels::DecodeAttentionArgs a;
        a.q = m.q.get();
        a.out = m.att.get();
        a.k_cache = m.k_cache(l);
        a.v_cache = m.v_cache(l);
        a.block_tables = m.dev<int32_t>(mt.block_tables);
        a.max_blocks = m.max_blocks_per_seq;
        a.context_lens = m.dev<int32_t>(mt.context_lens);
        a.batch = s.Bd;
        a.num_splits = s.splits;
        a.workspace = m.attention_ws.get();
        a.shape = shape;
        ENGRAM_RETURN_IF_ERROR(kernels::LaunchDecodeAttention(a, stream()));  // att[0, Bd)
      }
      if (tensor_cores && s.Bp > 0) {
        kernels::PrefillAttentionArgs a;
        a.q = m.q.get() + size_t(s.Bd) * Q;
        a.out = m.att.get() + size_t(s.Bd) * Q;
        a.k_cache = m.k_cache(l);
        a.v_cache = m.v_cache(l);
        a.block_tables = m.dev<int32_t>(mt.block_tables) + size_t(s.Bd) * m.max_blocks_per_seq;
        a.max_blocks = m.max_blocks_per_seq;
        a.q_offsets = m.dev<int32_t>(mt.q_offsets);
        a.context_lens = m.dev<int32_t>(mt.context_lens) + s.Bd;
        a.items = s.Bp;
        a.max_q_len = s.max_q_len;
        a.shape = shape;
        ENGRAM_RETURN_IF_ERROR(kernels::LaunchPrefillAttention(a, stream()));  // att[Bd, T)
      }
      ENGRAM_RETURN_IF_ERROR(
          m.gemm->Run(m.att.get(), w.o.get(), T, H, Q, m.proj.get(), stream()));  // (T, H)
      // ---- MLP: h += down(SiLU(gate(x)) * up(x)), x = RMSNorm(h) ----
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchAddRmsNorm(
          m.h.get(), m.proj.get(), w.o_bias.size() ? w.o_bias.get() : nullptr, w.post_norm.get(),
          eps, T, H, m.xn.get(), stream()));  // xn: (T, H)
      ENGRAM_RETURN_IF_ERROR(m.gemm->Run(m.xn.get(), w.gate_up.get(), T, 2 * I, H,
                                         m.gate_up_out.get(), stream()));  // (T, 2I)
      ENGRAM_RETURN_IF_ERROR(
          kernels::LaunchSwiGlu(m.gate_up_out.get(), T, I, m.act.get(), stream()));  // (T, I)
      ENGRAM_RETURN_IF_ERROR(
          m.gemm->Run(m.act.get(), w.down.get(), T, H, I, m.proj.get(), stream()));  // (T, H)
    }
    // The last layer's down projection is still pending in proj.
    if (end > first) ENGRAM_RETURN_IF_ERROR(FlushResidual());
    if (!head) return absl::OkStatus();
    // ---- Head: logits of each item's last token, then the next token ----
    ENGRAM_RETURN_IF_ERROR(kernels::LaunchGatherRmsNorm(m.h.get(), m.dev<int32_t>(mt.last_rows),
                                                        s.B, m.final_norm.get(), eps, H,
                                                        m.last.get(), stream()));  // (B, H)
    const bf16* lm_head = m.lm_head.size() ? m.lm_head.get() : m.embed.get();
    ENGRAM_RETURN_IF_ERROR(
        m.gemm->Run(m.last.get(), lm_head, s.B, V, H, m.logits.get(), stream()));  // (B, V)
    kernels::SampleArgs sample;
    sample.logits = m.logits.get();
    sample.params = m.dev<kernels::SampleParams>(mt.params);
    sample.B = s.B;
    sample.V = V;
    sample.tokens = m.dev<int32_t>(mt.sampled);
    sample.any_sorted = any_sorted;
    sample.workspace = m.sample_ws.get();
    return kernels::LaunchSample(sample, stream());  // tokens: (B)
  }

  // The Engram module of engram index `li` over the step's rows, whose rows are already in
  // e.rows_bf16: h += Engram(rows, h).
  absl::Status Engram(int li) {
    CudaBackbone::Impl::Engram& e = m.engram[li];
    const int H = config.hidden_size, T = s.T;
    ENGRAM_RETURN_IF_ERROR(m.gemm->Run(e.rows_bf16.get(), e.vk.get(), T, 2 * H, e.d_mem,
                                       m.vk_out.get(), stream()));  // [v | k]: (T, 2H)
    kernels::EngramGateArgs g;
    g.vk = m.vk_out.get();
    g.value_bias = e.value_bias.get();
    g.key_bias = e.key_bias.get();
    g.key_norm = e.key_norm.get();
    g.query_norm = e.query_norm.get();
    g.hidden = m.h.get();
    g.T = T;
    g.H = H;
    g.u = m.u.get();
    ENGRAM_RETURN_IF_ERROR(kernels::LaunchEngramGate(g, stream()));  // u: (T, H)
    return kernels::LaunchEngramConv(ConvArgs(li), stream());        // h += Y
  }

  kernels::EngramConvArgs ConvArgs(int li) {
    CudaBackbone::Impl::Engram& e = m.engram[li];
    CudaBackbone::Impl::Meta& mt = m.meta;
    kernels::EngramConvArgs c;
    c.u = m.u.get();
    c.hidden = m.h.get();
    c.T = s.T;
    c.H = config.hidden_size;
    c.kernel_size = e.kernel_size;
    c.dilation = e.dilation;
    c.conv_norm = e.conv_norm.get();
    c.conv_weight = e.conv_weight.get();
    c.items = s.B;
    c.row_offsets = m.dev<int32_t>(mt.row_offsets);
    c.start_positions = m.dev<int32_t>(mt.start_positions);
    c.item_of_row = m.dev<int32_t>(mt.item_of_row);
    c.histories = m.dev<float*>(mt.histories) + size_t(li) * options.max_batch_sequences;
    c.normed = e.normed.get();
    return c;
  }
};

}  // namespace

absl::Status CudaBackbone::Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                                StepOutput* out) {
  ENGRAM_RETURN_IF_ERROR(ValidateBatch(items, config_.vocab_size, out));
  // The current device is per thread, and Step runs on the scheduler's thread, not Create's.
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device), "cudaSetDevice");
  Impl& m = *impl_;
  const int bt = options_.block_tokens;
  auto state = [&](size_t i) -> CudaSequenceState& {
    return static_cast<CudaSequenceState&>(*items[i].sequence);
  };
  // The step must fit the activations sized at creation; checked before any block is taken, so a
  // refused call changes no sequence.
  size_t tokens_in_step = 0;
  for (const BatchItem& item : items) tokens_in_step += item.tokens.size();
  if (items.size() > size_t(options_.max_batch_sequences) ||
      tokens_in_step > size_t(options_.max_step_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Step: ", items.size(), " items of ", tokens_in_step, " tokens exceed max_batch_sequences ",
        options_.max_batch_sequences, " or max_step_tokens ", options_.max_step_tokens));
  }
  // ---- Admission: blocks for every item that can run; order decode items first ----
  std::vector<size_t> order;  // internal item order -> index into items
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < items.size(); ++i) {
      if (!out->status[i].ok()) continue;
      const bool decode = items[i].tokens.size() == 1;
      if (decode != (pass == 0)) continue;
      absl::Status st = Reserve(state(i), static_cast<int>(items[i].tokens.size()));
      if (!st.ok()) {
        out->status[i] = st;
        continue;
      }
      order.push_back(i);
    }
  }
  if (order.empty()) return absl::OkStatus();

  StepShape s;
  for (size_t i : order) {
    const int n = static_cast<int>(items[i].tokens.size());
    if (n == 1) {
      ++s.Bd;
    } else {
      ++s.Bp;
      s.max_q_len = std::max(s.max_q_len, n);
    }
    s.T += n;
  }
  s.B = s.Bd + s.Bp;
  // A pure decode step replays a captured graph of the smallest bucket that holds it.
  const bool graph = options_.cuda_graphs && s.Bp == 0 && out->logits == nullptr;
  int bucket = s.B;
  if (graph) {
    bucket = *std::lower_bound(m.buckets.begin(), m.buckets.end(), s.B);
  }
  // A graph step pads the batch to its bucket with one-token items (one row each); an eager step
  // pads nothing. Items index the per-item metadata (sized for max_batch_sequences), rows the
  // per-row metadata and activations (sized for max_step_tokens).
  const int items_total = graph ? bucket : s.B;
  const int rows_total = graph ? bucket : s.T;
  const kernels::AttentionShape shape{config_.num_attention_heads, config_.num_key_value_heads,
                                      config_.head_dim, bt,
                                      1.0f / std::sqrt(static_cast<float>(config_.head_dim))};

  // ---- Step metadata (host side) ----
  Impl::Meta& mt = m.meta;
  int32_t* tokens = m.host<int32_t>(mt.tokens);
  int32_t* positions = m.host<int32_t>(mt.positions);
  int32_t* slots = m.host<int32_t>(mt.slots);
  int32_t* tables = m.host<int32_t>(mt.block_tables);
  int32_t* context = m.host<int32_t>(mt.context_lens);
  int32_t* q_offsets = m.host<int32_t>(mt.q_offsets);
  int32_t* last_rows = m.host<int32_t>(mt.last_rows);
  auto* params = m.host<kernels::SampleParams>(mt.params);
  int32_t* row_offsets = m.host<int32_t>(mt.row_offsets);
  int32_t* start_positions = m.host<int32_t>(mt.start_positions);
  int32_t* item_of_row = m.host<int32_t>(mt.item_of_row);
  float** histories = m.host<float*>(mt.histories);
  uint8_t* live = m.host<uint8_t>(mt.live);
  const int MB = m.max_blocks_per_seq;
  bool any_sorted = false;
  int row = 0;
  q_offsets[0] = 0;
  for (size_t b = 0; b < order.size(); ++b) {
    const BatchItem& item = items[order[b]];
    CudaSequenceState& seq = state(order[b]);
    const int n = static_cast<int>(item.tokens.size());
    const int pos = seq.position();
    row_offsets[b] = row;
    start_positions[b] = pos;
    for (int j = 0; j < n; ++j, ++row) {
      tokens[row] = static_cast<int32_t>(item.tokens[j]);
      positions[row] = pos + j;
      slots[row] = seq.blocks_[(pos + j) / bt] * bt + (pos + j) % bt;
      item_of_row[row] = static_cast<int32_t>(b);
    }
    int32_t* table = tables + b * MB;
    std::copy(seq.blocks_.begin(), seq.blocks_.end(), table);
    std::fill(table + seq.blocks_.size(), table + MB, 0);
    context[b] = pos + n;
    if (n > 1) q_offsets[b - s.Bd + 1] = row - s.Bd;
    last_rows[b] = row - 1;
    kernels::SampleParams p;
    if (item.sampler != nullptr) {
      const SamplingParams& sp = item.sampler->params();
      p.temperature = sp.temperature;
      p.top_k = sp.top_k;
      p.top_p = sp.top_p;
      if (sp.temperature > 0 && config_.vocab_size > 1) {
        p.uniform = static_cast<float>(item.sampler->NextUniform());
        any_sorted |= sp.top_k > 0 || sp.top_p < 1.0f;
      }
    }
    params[b] = p;
    live[b] = 1;
    for (size_t li = 0; li < m.engram.size(); ++li) {
      Impl::Engram& e = m.engram[li];
      histories[li * options_.max_batch_sequences + b] =
          e.ring_rows > 0
              ? e.rings.get() + size_t(seq.ring_slot_) * e.ring_rows * config_.hidden_size
              : nullptr;
    }
  }
  // Padding of a graph bucket: one token per padded item at position 0 in the reserved block 0.
  for (int b = s.B; b < items_total; ++b, ++row) {
    row_offsets[b] = row;
    start_positions[b] = 0;
    tokens[row] = 0;
    positions[row] = 0;
    slots[row] = 0;
    item_of_row[row] = b;
    std::fill(tables + size_t(b) * MB, tables + size_t(b + 1) * MB, 0);
    context[b] = 1;
    last_rows[b] = row;
    params[b] = kernels::SampleParams{};
    live[b] = 0;
    for (size_t li = 0; li < m.engram.size(); ++li) {
      Impl::Engram& e = m.engram[li];
      // Padded items read and never commit slot 0's history: harmless, they are discarded.
      histories[li * options_.max_batch_sequences + b] = e.ring_rows > 0 ? e.rings.get() : nullptr;
    }
  }
  row_offsets[items_total] = row;
  StepShape run = s;
  if (graph) {
    run.T = run.B = run.Bd = bucket;
  }
  run.splits =
      run.Bd > 0 ? std::min(16, kernels::DecodeAttentionSplits(run.Bd, shape, m.sm_count)) : 1;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.meta_device.get(), m.meta_host.get(), mt.bytes,
                                       cudaMemcpyHostToDevice, m.stream),
                       "step metadata");

  Forward fwd{config_, options_, m, run, any_sorted};
  const std::vector<int> bounds = fwd.Boundaries();
  std::vector<int> engram_at(config_.num_hidden_layers, -1);
  for (size_t li = 0; li < m.engram.size(); ++li) engram_at[m.engram[li].layer] = int(li);

  // Host-side Engram rows of layer li into the staging buffer, then to the device. The wait for
  // them happens here, after every earlier layer was handed to the GPU. A row source answers with
  // f32 rows (copied up through pinned staging) or, for a layer with a device table, with row ids
  // (gathered on the device from the HBM cache and the table); one kind per layer and step.
  std::vector<bool> failed(order.size(), false);
  auto engram_layer = [&](int li) -> absl::Status {
    Impl::Engram& e = m.engram[li];
    int by_id = 0, by_rows = 0;
    auto fail = [&](size_t b, absl::Status why) {
      out->status[order[b]] = std::move(why);
      failed[b] = true;
      live[b] = 0;
    };
    for (size_t b = 0; b < order.size(); ++b) {
      const size_t i = order[b];
      const size_t n = items[i].tokens.size();
      if (failed[b]) continue;
      absl::StatusOr<EngramRows> r = rows.Locate(i, li);
      if (!r.ok()) {
        fail(b, r.status());
        continue;
      }
      if (r->where == EngramRows::Where::kRowIds) {
        uint64_t* ids = e.ids_host.get() + size_t(row_offsets[b]) * e.columns;
        if (!e.by_id || r->ids != n * e.columns || by_rows > 0) {
          fail(b, absl::InternalError(absl::StrCat(
                      "Engram row source returned ", r->ids, " row ids for layer ", e.layer,
                      !e.by_id    ? ", which has no device table (CudaBackboneOptions::engram_tables)"
                      : by_rows > 0 ? " after f32 rows for other items of the step"
                                    : absl::StrCat(", expected ", n * e.columns))));
          std::fill(ids, ids + n * e.columns, 0);  // row 0 exists: the failed rows gather harmlessly
          continue;
        }
        const uint64_t* bad = std::find_if(r->row_ids, r->row_ids + r->ids,
                                           [&](uint64_t id) { return id >= e.table_rows; });
        if (bad != r->row_ids + r->ids) {
          fail(b, absl::InternalError(absl::StrCat("Engram row id ", *bad, " for layer ", e.layer,
                                                   " is beyond its table's ", e.table_rows, " rows")));
          std::fill(ids, ids + n * e.columns, 0);
          continue;
        }
        std::memcpy(ids, r->row_ids, r->ids * sizeof(uint64_t));
        ++by_id;
        continue;
      }
      if (r->where != EngramRows::Where::kHost || r->floats != n * e.d_mem || by_id > 0) {
        fail(b, absl::InternalError(absl::StrCat(
                    "Engram row source returned ", r->floats,
                    r->where == EngramRows::Where::kHost ? " host" : " device", " floats for layer ",
                    e.layer, ", expected ", n * e.d_mem, " host floats",
                    by_id > 0 ? " like the step's other items (row ids)" : "")));
        continue;
      }
      std::memcpy(e.staging.get() + size_t(row_offsets[b]) * e.d_mem, r->data,
                  n * e.d_mem * sizeof(float));
      ++by_rows;
    }
    if (by_id == 0) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(e.rows.get(), e.staging.get(),
                                           size_t(rows_total) * e.d_mem * sizeof(float),
                                           cudaMemcpyHostToDevice, m.stream),
                           "Engram rows to the device");
      ENGRAM_RETURN_IF_ERROR(kernels::LaunchToBf16(e.rows.get(), int64_t(run.T) * e.d_mem,
                                                   e.rows_bf16.get(), m.stream));  // (T, d_mem)
      return fwd.Engram(li);
    }
    // Rows by id: the real rows' ids up, then one gather (padded rows keep stale, finite rows).
    const size_t n_ids = size_t(row_offsets[s.B]) * e.columns;
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(e.ids.get(), e.ids_host.get(), n_ids * sizeof(uint64_t),
                                         cudaMemcpyHostToDevice, m.stream),
                         "Engram row ids to the device");
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(e.counters.get(), 0, e.counters.bytes(), m.stream),
                         "row counters");
    kernels::RowGatherArgs g;
    g.row_ids = e.ids.get();
    g.n = static_cast<uint32_t>(n_ids);
    g.dtype = e.dtype;
    g.head_dim = e.head_dim;
    if (e.cache_rows > 0) {
      g.slot_map = e.slot_map.get();
      g.slot_mask = e.slot_map.size() - 1;
      g.pool = e.pool.get();
    }
    g.arena = e.table;
    g.arena_rows = e.table_rows;
    g.arena_stride = e.table_stride;
    g.out = e.rows_bf16.get();
    g.counters = e.counters.get();
    ENGRAM_RETURN_IF_ERROR(kernels::LaunchRowGather(g, m.stream));  // rows_bf16: (T, d_mem)
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(e.counters_host.get(), e.counters.get(),
                                         e.counters.bytes(), cudaMemcpyDeviceToHost, m.stream),
                         "row counters");
    e.counted = true;
    return fwd.Engram(li);
  };

  // Segment k covers layers [k == 0 ? 0 : bounds[k-1], bounds[k]); the Engram layer at bounds[k]
  // (every bound but the last is one) runs between segments k and k + 1. An Engram layer at layer
  // 0 runs after the embedding, before segment 0, which then runs eagerly.
  const bool engram_first = engram_at[0] >= 0;
  // Graphs are keyed by bucket and by whether the sampler's sort path is in them.
  const int graph_key = bucket * 2 + (any_sorted ? 1 : 0);
  auto run_segment = [&](size_t k) -> absl::Status {
    const int first = k == 0 ? 0 : bounds[k - 1];
    const bool embed = k == 0 && !engram_first, head = k + 1 == bounds.size();
    if (!graph || (k == 0 && engram_first)) return fwd.Segment(first, bounds[k], embed, head);
    std::vector<cudaGraphExec_t>& segs = m.graphs[graph_key];
    if (segs.empty()) segs.assign(bounds.size(), nullptr);
    if (segs[k] == nullptr) {
      cudaGraph_t g = nullptr;
      CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal),
                           "begin capture");
      absl::Status st = fwd.Segment(first, bounds[k], embed, head);
      const cudaError_t end = cudaStreamEndCapture(m.stream, &g);
      ENGRAM_RETURN_IF_ERROR(st);
      CUDA_RETURN_IF_ERROR(end, "end capture");
      const cudaError_t inst = cudaGraphInstantiate(&segs[k], g, 0);
      cudaGraphDestroy(g);
      CUDA_RETURN_IF_ERROR(inst, "instantiate graph");
    }
    return CudaStatus(cudaGraphLaunch(segs[k], m.stream), "graph launch");
  };

  // ---- The forward pass ----
  if (engram_first) {
    ENGRAM_RETURN_IF_ERROR(kernels::LaunchEmbedding(m.embed.get(), config_.hidden_size,
                                                    m.dev<int32_t>(mt.tokens), run.T, m.h.get(),
                                                    m.stream));  // h: (T, H)
    ENGRAM_RETURN_IF_ERROR(engram_layer(engram_at[0]));
  }
  for (size_t k = 0; k < bounds.size(); ++k) {
    ENGRAM_RETURN_IF_ERROR(run_segment(k));
    if (k + 1 < bounds.size()) ENGRAM_RETURN_IF_ERROR(engram_layer(engram_at[bounds[k]]));
  }
  if (graph) ++graph_replays_;

  // ---- Results: tokens (and logits when asked), conv histories of live items ----
  if (!m.engram.empty()) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m.dev<uint8_t>(mt.live), live, items_total,
                                         cudaMemcpyHostToDevice, m.stream),
                         "live flags");
  }
  for (size_t li = 0; li < m.engram.size(); ++li) {
    if (m.engram[li].ring_rows == 0) continue;
    ENGRAM_RETURN_IF_ERROR(kernels::LaunchEngramConvCommit(fwd.ConvArgs(static_cast<int>(li)),
                                                           m.dev<uint8_t>(mt.live), m.stream));
  }
  int32_t* sampled = m.host<int32_t>(mt.sampled);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sampled, m.dev<int32_t>(mt.sampled), s.B * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, m.stream),
                       "sampled tokens");
  if (out->logits != nullptr) {
    const size_t V = config_.vocab_size;
    for (size_t b = 0; b < order.size(); ++b) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits + order[b] * V, m.logits.get() + b * V,
                                           V * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
                           "logits");
    }
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream), "step");
  for (Impl::Engram& e : m.engram) {
    if (!e.counted) continue;
    const unsigned int* c = e.counters_host.get();
    e.counts.hbm += c[kernels::kRowFromHbm];
    e.counts.staging += c[kernels::kRowFromStaging];
    e.counts.table += c[kernels::kRowFromArena];
    e.counts.missing += c[kernels::kRowMissing];
    e.counted = false;
  }
  for (size_t b = 0; b < order.size(); ++b) {
    const size_t i = order[b];
    if (failed[b]) continue;
    out->tokens[i] = static_cast<uint32_t>(sampled[b]);
    state(i).position_ += static_cast<int>(items[i].tokens.size());
  }
  return absl::OkStatus();
}

}  // namespace engram
