// The backbone interface: what the scheduler drives, whatever runs the model.
//
// Two implementations: CpuBackbone (model/cpu_backbone.h, f32 on the CPU: the reference) and
// CudaBackbone (model/cuda/cuda_backbone.h, bf16 weights on the GPU with a paged KV cache). The
// scheduler (server/scheduler.h), in-process generation (model/local_generate.h) and the benchmarks
// see only this interface, so the two are interchangeable (`--device cpu|cuda`).
//
// A step runs a ragged batch: each item is one sequence with its new tokens, a prefill chunk or a
// single decode token, and optionally a Sampler that picks the item's next token from the logits
// of its last token. The backbone owns each sequence's state (KV cache, Engram conv histories,
// position) behind the opaque SequenceState; the scheduler only holds it.
//
// KV-cache capacity. A backbone whose cache is bounded (the GPU) hands out blocks of block_tokens
// positions; the scheduler admits a sequence only when the blocks of its prompt can be reserved
// and, when a decode step lacks blocks, preempts the newest sequence (frees its state and
// recomputes it later). A backbone with an unbounded cache (the CPU, whose cache grows on the heap)
// reports total_blocks = 0 and never refuses.
#ifndef ENGRAM_MODEL_BACKBONE_H_
#define ENGRAM_MODEL_BACKBONE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/row_format.h"
#include "model/model_config.h"

namespace engram {

class Sampler;  // model/sampler.h

// Per-sequence state: created by Backbone::NewSequence, advanced by Backbone::Step, released
// (with its KV blocks) when destroyed, which hands the blocks back to the backbone: destroy every
// sequence before its backbone. Not thread-safe; one step at a time per sequence.
class SequenceState {
 public:
  virtual ~SequenceState() = default;
  SequenceState(const SequenceState&) = delete;
  SequenceState& operator=(const SequenceState&) = delete;

  // Tokens already processed (the position of the next token).
  int position() const { return position_; }
  // Most tokens the sequence can ever hold (prompt + generated).
  int max_tokens() const { return max_tokens_; }

 protected:
  explicit SequenceState(int max_tokens) : max_tokens_(max_tokens) {}

  int position_ = 0;
  int max_tokens_;
};

// One item of a batched step.
struct BatchItem {
  SequenceState* sequence = nullptr;
  absl::Span<const uint32_t> tokens;
  // When set, the item's next token is sampled from the logits of its last token (the last chunk
  // of a prompt, and every decode token). Null for a prompt chunk that is not the last.
  Sampler* sampler = nullptr;
};

// Where the rows of one (item, Engram layer) are: decoded f32 rows in host or device memory, or
// only their ids, which a backbone that can read the layer's table itself (the GPU backbone given
// CudaBackboneOptions::engram_tables) gathers on its own; plus an event to wait on before reading
// them (null when they are ready now).
struct EngramRows {
  enum class Where { kHost, kDevice, kRowIds };
  Where where = Where::kHost;
  // kHost, kDevice: f32 rows, [tokens, d_mem] in (order, head) column order.
  const float* data = nullptr;
  size_t floats = 0;
  // kRowIds: host row ids into the layer's table, [tokens, columns] in (order, head) column order
  // (columns = d_mem / head_dim).
  const uint64_t* row_ids = nullptr;
  size_t ids = 0;
  // A cudaEvent_t recorded after the rows were written (device rows); null = ready.
  void* ready_event = nullptr;
};

// An Engram layer's table as the GPU backbone reads it by row id (EngramRows::Where::kRowIds),
// through the unified row gather (model/kernels/row_gather.cuh): an HBM hot-row cache first, then
// the rows themselves, in host memory read in place over PCIe (e.g. the memory tier's resident
// shared-memory arena) or copied whole into HBM. The CPU backbone reads rows by value only.
struct EngramDeviceTable {
  RowDType dtype = RowDType::kBF16;  // f32, bf16 or fp8_e4m3_e8m0
  int head_dim = 0;
  uint64_t rows = 0;
  // Row r at host + r * stride (e.g. the memory tier's resident arena). Registered with the driver
  // (mapped, read-only) unless already pinned; must outlive the backbone.
  const uint8_t* host = nullptr;
  uint64_t stride = 0;
  // Copy the whole table into HBM at creation and read it there (the table-in-HBM configuration).
  bool whole_in_hbm = false;
  // HBM hot-row cache of this many bytes (0: none), filled at creation with the first rows of
  // hot_rows (hottest first; ids >= rows and repeats are skipped).
  size_t hbm_cache_bytes = 0;
  std::vector<uint64_t> hot_rows;
};

// Supplies the Engram rows of an item for an Engram layer. Called by the forward pass exactly when
// it reaches that layer (that is where the worker waits for prefetched rows). Returns [tokens,
// d_mem] f32 rows in (order, head) column order, or an error (e.g. UNAVAILABLE when the memory tier
// is gone) which fails the step for that item only.
//
// Call pattern: from the thread that called Step, in layer order, for each Engram layer index all
// live items in item order; at most once per (item, layer); never for an item that has already
// failed. The returned rows must stay valid until the next call.
class EngramRowSource {
 public:
  virtual ~EngramRowSource() = default;
  // Host f32 rows.
  virtual absl::StatusOr<absl::Span<const float>> Rows(size_t item, int engram_layer_index) = 0;
  // The rows wherever they are. The default hands out Rows() as host memory; a source that fills
  // device memory itself overrides it. The GPU backbone calls this one, the CPU backbone Rows().
  virtual absl::StatusOr<EngramRows> Locate(size_t item, int engram_layer_index);
};

// What a step produced, per item.
struct StepOutput {
  // OK, or why the item failed: INVALID_ARGUMENT (no tokens, a token id >= vocab_size),
  // OUT_OF_RANGE (the tokens do not fit the sequence's max_tokens), RESOURCE_EXHAUSTED (no KV
  // blocks), or the error its EngramRowSource returned. A failed item's sequence keeps its
  // position and Engram state (the step can be retried or the sequence dropped).
  std::vector<absl::Status> status;
  // The sampled token of every OK item that had a sampler (unspecified otherwise).
  std::vector<uint32_t> tokens;
  // When not null: [items, vocab] host floats receiving the logits of each OK item's last token
  // (tests and golden checks; the GPU backbone copies them back only when asked).
  float* logits = nullptr;
};

// KV-cache capacity in blocks of block_tokens positions. total_blocks == 0: unbounded.
struct KvCapacity {
  int block_tokens = 1;
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;

  bool bounded() const { return total_blocks > 0; }
  // Fraction of the blocks in use (0 when unbounded).
  double usage() const {
    return bounded() ? 1.0 - double(free_blocks) / double(total_blocks) : 0.0;
  }
};

class Backbone {
 public:
  virtual ~Backbone() = default;

  virtual const ModelConfig& config() const = 0;
  int vocab_size() const { return config().vocab_size; }
  // "cpu", or "cuda" and the device's name.
  virtual std::string device_name() const = 0;

  // A fresh sequence that can hold up to `max_tokens` tokens, clamped to [1,
  // max_position_embeddings]. Holds no KV blocks yet.
  virtual std::unique_ptr<SequenceState> NewSequence(int max_tokens) = 0;

  virtual KvCapacity kv_capacity() const = 0;
  // KV blocks `sequence` still needs to hold `tokens` more tokens (0 for an unbounded cache).
  virtual int64_t BlocksNeeded(const SequenceState& sequence, int tokens) const = 0;
  // Takes those blocks now, so that the next steps of these tokens cannot run out.
  // RESOURCE_EXHAUSTED (and nothing taken) when too few are free.
  virtual absl::Status Reserve(SequenceState& sequence, int tokens) = 0;

  // Runs the batch. Per-item failures are in out->status (the other items still complete); a
  // successful item's sequence advances by its token count. The returned Status is not OK only
  // when the call itself is malformed (null pointers, one sequence twice) or the device failed;
  // then no sequence changes (device failure: the backbone is unusable).
  // Not thread-safe: one Step at a time per backbone (the scheduler's loop thread).
  virtual absl::Status Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                            StepOutput* out) = 0;

  // Steps replayed from a captured CUDA graph so far (0 for backbones without graphs).
  virtual uint64_t graph_replays() const { return 0; }
};

// Checks the parts of a batch every backbone refuses the same way: null output, null or repeated
// sequences (the call's error), then per item no tokens, token ids >= vocab and tokens beyond the
// sequence's max_tokens (the item's error, in out->status; out->status and out->tokens are sized).
absl::Status ValidateBatch(absl::Span<const BatchItem> items, int vocab_size, StepOutput* out);

}  // namespace engram

#endif  // ENGRAM_MODEL_BACKBONE_H_
