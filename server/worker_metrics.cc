#include "server/worker_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/metrics_server.h"
#include "common/process_metrics.h"

namespace engram {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

const std::vector<double>& TokenBuckets() {
  static const std::vector<double> buckets = {1,   2,   4,   8,    16,   32,  64,
                                              128, 256, 512, 1024, 2048, 4096};
  return buckets;
}

prometheus::Labels Model(const std::string& model) { return {{"model_name", model}}; }

prometheus::Gauge& ModelGauge(prometheus::Registry& r, const char* name, const char* help,
                              const std::string& model) {
  return BuildGauge().Name(name).Help(help).Register(r).Add(Model(model));
}
prometheus::Counter& ModelCounter(prometheus::Registry& r, const char* name, const char* help,
                                  const std::string& model) {
  return BuildCounter().Name(name).Help(help).Register(r).Add(Model(model));
}
prometheus::Histogram& ModelLatency(prometheus::Registry& r, const char* name, const char* help,
                                    const std::string& model) {
  return BuildHistogram().Name(name).Help(help).Register(r).Add(Model(model),
                                                                 LatencyBucketsSeconds());
}

}  // namespace

const char* RowTierName(RowTier tier) {
  switch (tier) {
    case RowTier::kDramShm:
      return "dram_shm";
    case RowTier::kDram:
      return "dram";
    case RowTier::kNvme:
      return "nvme";
  }
  return "unknown";
}

WorkerMetrics::WorkerMetrics(std::shared_ptr<prometheus::Registry> registry,
                             const std::vector<int>& engram_layer_ids,
                             const std::string& model_name)
    : model_name(model_name.empty() ? "unknown" : model_name),
      queue_length(ModelGauge(*registry, "engram_worker_queue_length",
                              "Requests waiting for a slot in the running batch.",
                              this->model_name)),
      running_requests(ModelGauge(*registry, "engram_worker_running_requests",
                                  "Sequences in the running batch.", this->model_name)),
      time_to_first_token(
          ModelLatency(*registry, "engram_worker_time_to_first_token_seconds",
                       "Time from receiving a request to streaming its first token.",
                       this->model_name)),
      inter_token_latency(ModelLatency(*registry, "engram_worker_inter_token_latency_seconds",
                                       "Time between consecutive generated tokens of a request.",
                                       this->model_name)),
      e2e_request_latency(ModelLatency(*registry, "engram_worker_e2e_request_latency_seconds",
                                       "Time from receiving a request to its last message.",
                                       this->model_name)),
      request_queue_time(ModelLatency(*registry, "engram_worker_request_queue_time_seconds",
                                      "Time a request waited before joining the running batch.",
                                      this->model_name)),
      prompt_tokens(ModelCounter(*registry, "engram_worker_prompt_tokens_total",
                                 "Prompt tokens of admitted requests.", this->model_name)),
      generation_tokens(ModelCounter(*registry, "engram_worker_generation_tokens_total",
                                     "Tokens generated.", this->model_name)),
      step_duration(AddLatency(*registry, "engram_worker_step_duration_seconds",
                               "Duration of one batched forward step (prefill chunks + decode).")),
      step_tokens(BuildHistogram()
                      .Name("engram_worker_step_tokens")
                      .Help("Tokens processed by one batched forward step.")
                      .Register(*registry)
                      .Add({}, TokenBuckets())),
      prefill_step_duration(AddLatency(*registry, "engram_worker_prefill_step_duration_seconds",
                                       "Duration of a forward step that held prompt tokens.")),
      decode_step_duration(AddLatency(*registry, "engram_worker_decode_step_duration_seconds",
                                      "Duration of a forward step of decode tokens only.")),
      preemptions(AddCounter(*registry, "engram_worker_preemptions_total",
                             "Sequences preempted for lack of KV blocks (recomputed later).")),
      graph_replays(AddCounter(*registry, "engram_worker_cuda_graph_replays_total",
                               "Decode steps replayed from a captured CUDA graph.")),
      step_stall(AddLatency(*registry, "engram_worker_step_stall_seconds",
                            "Time one forward step waited for Engram rows (all layers).")),
      sat_out(AddCounter(*registry, "engram_worker_sequences_sat_out_total",
                         "Sequences left out of a step while their cold Engram rows arrive "
                         "(one per sequence and step).")),
      sat_out_now(AddGauge(*registry, "engram_worker_sat_out_sequences",
                           "Sequences that sat out the latest step waiting for cold rows.")),
      memory_tier_up(
          AddGauge(*registry, "engram_worker_memory_tier_up",
                   "1 while the memory tier is connected and serves this model's tables.")),
      memory_tier_reconnects(AddCounter(*registry, "engram_worker_memory_tier_reconnects_total",
                                        "Reconnections to the memory tier after it went away.")),
      kv_cache_usage_ratio(ModelGauge(
          *registry, "engram_worker_kv_cache_usage_ratio",
          "Share of the KV cache in use (0..1): for the CPU backbone, tokens held by running "
          "sequences / (max running requests x context).",
          this->model_name)),
      request_prefill_time(ModelLatency(*registry, "engram_worker_request_prefill_time_seconds",
                                        "Time from admission into the batch to the first token.",
                                        this->model_name)),
      request_decode_time(ModelLatency(*registry, "engram_worker_request_decode_time_seconds",
                                       "Time from the first token to the end of the request.",
                                       this->model_name)),
      prefetch_batches(AddCounter(*registry, "engram_worker_prefetch_batches_total",
                                  "Row-id batches sent on the memory tier's Prefetch stream.")),
      prefetch_round_trip(AddLatency(*registry, "engram_worker_prefetch_round_trip_seconds",
                                     "Time from sending a Prefetch batch to receiving its rows.")),
      registry_(std::move(registry)) {
  AddBuildInfo(*registry_, "worker");
  auto limit = [&](const char* name, const char* help) -> prometheus::Gauge& {
    return ModelGauge(*registry_, name, help, this->model_name);
  };
  max_running_ = &limit("engram_worker_max_running_requests",
                        "Configured most sequences in the running batch (--max-running-requests).");
  max_queued_ = &limit("engram_worker_max_queued_requests",
                       "Configured most requests waiting for a batch slot (--max-queued-requests).");
  max_context_ = &limit("engram_worker_max_context_tokens",
                        "Configured context window in tokens (prompt + generated).");
  auto& finished =
      BuildCounter()
          .Name("engram_worker_requests_finished_total")
          .Help("Requests the scheduler ended, by finish reason: stop (stop string or token, EOS), "
                "length (max_tokens or context), abort (Abort, client gone), error.")
          .Register(*registry_);
  const char* reasons[] = {"stop", "length", "abort", "error"};
  for (int i = 0; i < 4; ++i) {
    finished_[i] = &finished.Add({{"model_name", this->model_name}, {"finish_reason", reasons[i]}});
  }
  auto& requests = BuildCounter()
                       .Name("engram_worker_requests_total")
                       .Help("Finished Generate requests by gRPC status code.")
                       .Register(*registry_);
  // absl spells the codes as gRPC does ("INVALID_ARGUMENT"): the label values of other servers.
  for (int code = 0; code < kNumCodes; ++code) {
    requests_[code] =
        &requests.Add({{"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))},
                       {"model_name", this->model_name}});
  }

  auto& rows = BuildCounter()
                   .Name("engram_worker_engram_rows_total")
                   .Help("Engram rows used by the forward pass, by the tier that served them.")
                   .Register(*registry_);
  for (int t = 0; t < kNumRowTiers; ++t) {
    engram_rows_[t] = &rows.Add({{"tier", RowTierName(static_cast<RowTier>(t))}});
  }

  auto& slack = BuildHistogram()
                    .Name("engram_worker_prefetch_slack_seconds")
                    .Help(
                        "Per step and Engram layer: how long before the layer needed them the "
                        "rows were ready (the smallest over the step's sequences; 0 on a stall).")
                    .Register(*registry_);
  auto& stalls = BuildCounter()
                     .Name("engram_worker_prefetch_stalls_total")
                     .Help("Steps in which an Engram layer had to wait for rows.")
                     .Register(*registry_);
  auto& stall_seconds = BuildCounter()
                            .Name("engram_worker_prefetch_stall_seconds_total")
                            .Help("Time Engram layers spent waiting for rows.")
                            .Register(*registry_);
  for (int layer : engram_layer_ids) {
    std::string label = absl::StrCat(layer);
    slack_.push_back(&slack.Add({{"layer", label}}, LatencyBucketsSeconds()));
    stalls_.push_back(&stalls.Add({{"layer", label}}));
    stall_seconds_.push_back(&stall_seconds.Add({{"layer", label}}));
  }

  auto& hot_lookups = BuildCounter()
                          .Name("engram_worker_hot_cache_lookups_total")
                          .Help("Engram row lookups in the HBM hot-row cache, by result.")
                          .Register(*registry_);
  hot_hits_ = &hot_lookups.Add({{"result", "hit"}});
  hot_misses_ = &hot_lookups.Add({{"result", "miss"}});
  hot_admissions_ = &AddCounter(*registry_, "engram_worker_hot_cache_admissions_total",
                                "Rows loaded into the HBM hot-row cache after a miss.");
  hot_evictions_ = &AddCounter(*registry_, "engram_worker_hot_cache_evictions_total",
                               "Rows removed from the HBM hot-row cache to make room.");
  hot_rejections_ =
      &AddCounter(*registry_, "engram_worker_hot_cache_rejections_total",
                  "Missed rows the HBM cache's admission filter did not let replace a resident.");
  hot_hit_ratio_ =
      &AddGauge(*registry_, "engram_worker_hot_cache_hit_ratio",
                "Share of Engram row lookups the HBM hot-row cache served, since start.");
  hot_slots_ = &AddGauge(*registry_, "engram_worker_hot_cache_slots",
                         "Rows the HBM hot-row cache can hold.");
  hot_occupied_ = &AddGauge(*registry_, "engram_worker_hot_cache_occupied_slots",
                            "Rows the HBM hot-row cache holds.");
}

void WorkerMetrics::RecordHotCache(const HotRowCacheCounters& now) {
  auto add = [](prometheus::Counter* c, uint64_t now, uint64_t last) {
    if (now > last) c->Increment(static_cast<double>(now - last));
  };
  add(hot_hits_, now.hits, hot_last_.hits);
  add(hot_misses_, now.misses, hot_last_.misses);
  add(hot_admissions_, now.admissions, hot_last_.admissions);
  add(hot_evictions_, now.evictions, hot_last_.evictions);
  add(hot_rejections_, now.rejections, hot_last_.rejections);
  hot_hit_ratio_->Set(now.hit_rate());
  hot_slots_->Set(static_cast<double>(now.slots));
  hot_occupied_->Set(static_cast<double>(now.occupied_slots));
  hot_last_ = now;
}

prometheus::Counter& WorkerMetrics::requests(absl::StatusCode code) {
  int c = static_cast<int>(code);
  if (c < 0 || c >= kNumCodes) c = static_cast<int>(absl::StatusCode::kUnknown);
  return *requests_[c];
}

void WorkerMetrics::RecordFinished(FinishReason reason, absl::StatusCode code, absl::Time admitted,
                                   absl::Time first_token, absl::Time end) {
  int index;
  if (code == absl::StatusCode::kCancelled || reason == FinishReason::kAborted) {
    index = 2;  // abort
  } else if (code != absl::StatusCode::kOk) {
    index = 3;  // error
  } else if (reason == FinishReason::kLength || reason == FinishReason::kContext) {
    index = 1;  // length
  } else {
    index = 0;  // stop (stop string or token id, EOS)
  }
  finished_[index]->Increment();
  if (admitted != absl::InfinitePast() && first_token != absl::InfinitePast()) {
    request_prefill_time.Observe(absl::ToDoubleSeconds(first_token - admitted));
    request_decode_time.Observe(absl::ToDoubleSeconds(end - first_token));
  }
}

void WorkerMetrics::SetLimits(int max_running_requests, int max_queued_requests,
                              int max_context_tokens) {
  max_running_->Set(max_running_requests);
  max_queued_->Set(max_queued_requests);
  max_context_->Set(max_context_tokens);
}

}  // namespace engram
