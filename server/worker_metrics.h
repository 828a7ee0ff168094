// WorkerMetrics: every Prometheus metric of engram-worker, declared in one place
// (docs/architecture.md pattern 8). Served on /metrics by common/metrics_server.h.
//
// Names follow engram_<subsystem>_<what>_<unit> and mirror what vLLM/SGLang users know
// (queue length, running requests, time to first token, inter-token latency, prompt/generation
// token counters, e2e latency). Label children are resolved once here and kept as references:
// nothing is looked up by string on the request path. Per-layer children are indexed by the
// Engram layer's index in the model's engram_layer_ids (0, 1, ...), not by its layer id.
//
// Request metrics carry a model_name label (what gateways and dashboards group by); latency
// histograms reach 600 s (LatencyBucketsSeconds). The configured limits are gauges, so
// autoscaler thresholds need no hard-coded numbers (KEDA/HPA: running / max_running).
#ifndef ENGRAM_SERVER_WORKER_METRICS_H_
#define ENGRAM_SERVER_WORKER_METRICS_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "model/hot_row_cache.h"
#include "model/sampler.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace engram {

// Where a row the worker used came from. kDramShm = the tier's DRAM arena read directly through
// shared memory by this worker; the others are rows delivered in the Prefetch stream and counted
// by the tier that served them (PrefetchResponse.served_by).
enum class RowTier { kDramShm = 0, kDram = 1, kNvme = 2 };
inline constexpr int kNumRowTiers = 3;

class WorkerMetrics {
 public:
  // `engram_layer_ids`: the model's Engram layers, used as the `layer` label values;
  // `model_name`: the model_name label of the request metrics (empty = "unknown").
  WorkerMetrics(std::shared_ptr<prometheus::Registry> registry,
                const std::vector<int>& engram_layer_ids, const std::string& model_name = "");
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  const std::string model_name;
  // Requests waiting for a batch slot (engram_worker_queue_length).
  prometheus::Gauge& queue_length;
  // Sequences in the running batch (engram_worker_running_requests).
  prometheus::Gauge& running_requests;
  // Time from receiving a request to streaming its first token.
  prometheus::Histogram& time_to_first_token;
  // Time between consecutive tokens of one request.
  prometheus::Histogram& inter_token_latency;
  // Time from receiving a request to its last message.
  prometheus::Histogram& e2e_request_latency;
  // Time a request waited before joining the batch.
  prometheus::Histogram& request_queue_time;
  // Tokens of prompts admitted / tokens generated.
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& generation_tokens;
  // Duration of one batched forward step, and tokens processed in it.
  prometheus::Histogram& step_duration;
  prometheus::Histogram& step_tokens;
  // Duration of steps that held prompt tokens (prefill, possibly with decode tokens) and of pure
  // decode steps.
  prometheus::Histogram& prefill_step_duration;
  prometheus::Histogram& decode_step_duration;
  // Sequences preempted (their KV blocks freed, recomputed later) because decode ran out of blocks.
  prometheus::Counter& preemptions;
  // Decode steps replayed from a captured CUDA graph.
  prometheus::Counter& graph_replays;
  // Per step: the time the forward pass waited for Engram rows, all items and layers together
  // (0 when every row was there in time).
  prometheus::Histogram& step_stall;
  // Sequences left out of a step because their rows were cold (scheduler.cold_rows = sit-out):
  // one count per sequence and step, and how many sat out the latest step.
  prometheus::Counter& sat_out;
  prometheus::Gauge& sat_out_now;
  // 1 while the memory tier is connected and its tables match the model, else 0.
  prometheus::Gauge& memory_tier_up;
  // Successful reconnections to the memory tier after it went away.
  prometheus::Counter& memory_tier_reconnects;
  // The share of the KV cache in use, 0..1 (engram_worker_kv_cache_usage_ratio). Set by the
  // scheduler (CPU backbone: tokens held by running sequences / (max running x context)); a
  // backbone with a block pool reports its used blocks / all blocks.
  prometheus::Gauge& kv_cache_usage_ratio;
  // Time from admission to the first token, and from the first token to the end, per request.
  prometheus::Histogram& request_prefill_time;
  prometheus::Histogram& request_decode_time;
  // Prefetch messages sent and their round-trip time (send -> rows received).
  prometheus::Counter& prefetch_batches;
  prometheus::Histogram& prefetch_round_trip;

  // Finished requests by gRPC code (engram_worker_requests_total{code="OK"|...}).
  prometheus::Counter& requests(absl::StatusCode code);
  // A request the scheduler ended: counts engram_worker_requests_finished_total{finish_reason}
  // (stop: stop string/token or EOS; length: max_tokens or the context; abort: Abort or the client
  // went away; error: any other failure) and observes its prefill and decode times (a phase whose
  // start is InfinitePast did not happen and is not observed).
  void RecordFinished(FinishReason reason, absl::StatusCode code, absl::Time admitted,
                      absl::Time first_token, absl::Time end);
  // The configured limits (engram_worker_max_running_requests, _max_queued_requests,
  // _max_context_tokens).
  void SetLimits(int max_running_requests, int max_queued_requests, int max_context_tokens);
  // Engram rows used by the forward pass, by the tier that served them.
  prometheus::Counter& engram_rows(RowTier tier) { return *engram_rows_[static_cast<int>(tier)]; }
  // Per Engram layer: how early the rows were ready before the layer needed them (slack), how
  // often the layer had to wait (stalls) and for how long in total.
  prometheus::Histogram& prefetch_slack(int engram_layer_index) {
    return *slack_[engram_layer_index];
  }
  prometheus::Counter& prefetch_stalls(int engram_layer_index) {
    return *stalls_[engram_layer_index];
  }
  prometheus::Counter& prefetch_stall_seconds(int engram_layer_index) {
    return *stall_seconds_[engram_layer_index];
  }
  // The HBM hot-row cache's counts (HotRowCache::counters(), cumulative): adds what changed since
  // the last call to engram_worker_hot_cache_lookups_total{result=hit|miss}, _admissions_total,
  // _evictions_total, _rejections_total, and sets _hit_ratio (since start), _slots and
  // _occupied_slots. Call from the cache's owner between steps.
  void RecordHotCache(const HotRowCacheCounters& now);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  // gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED).
  static constexpr int kNumCodes = 17;
  std::array<prometheus::Counter*, kNumCodes> requests_{};
  // stop, length, abort, error.
  std::array<prometheus::Counter*, 4> finished_{};
  prometheus::Gauge* max_running_ = nullptr;
  prometheus::Gauge* max_queued_ = nullptr;
  prometheus::Gauge* max_context_ = nullptr;
  std::array<prometheus::Counter*, kNumRowTiers> engram_rows_{};
  std::vector<prometheus::Histogram*> slack_;
  std::vector<prometheus::Counter*> stalls_;
  std::vector<prometheus::Counter*> stall_seconds_;
  prometheus::Counter* hot_hits_ = nullptr;
  prometheus::Counter* hot_misses_ = nullptr;
  prometheus::Counter* hot_admissions_ = nullptr;
  prometheus::Counter* hot_evictions_ = nullptr;
  prometheus::Counter* hot_rejections_ = nullptr;
  prometheus::Gauge* hot_hit_ratio_ = nullptr;
  prometheus::Gauge* hot_slots_ = nullptr;
  prometheus::Gauge* hot_occupied_ = nullptr;
  HotRowCacheCounters hot_last_;
};

// The label value of a row tier: "dram_shm", "dram" or "nvme".
const char* RowTierName(RowTier tier);

}  // namespace engram

#endif  // ENGRAM_SERVER_WORKER_METRICS_H_
