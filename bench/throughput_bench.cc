// Offline generation throughput through the worker's own scheduler and backbone, shaped like
// nano-vLLM's bench.py so the figures compare with published ones (docs/benchmarks.md):
//
//   N sequences (default 512; nano-vLLM's own script uses 256), prompt ids uniform in [0, 10000),
//   prompt lengths U(100, 1024), output lengths U(100, 1024), EOS ignored, temperature 0.6, fixed
//   seed; all submitted at once; throughput = output tokens / wall time including prefill.
//
// Beside it, in the same run: B=1 decode speed (a 128-token prompt, then 256 tokens) against the
// HBM roofline (weight bytes over the device-to-device bandwidth measured here), and the
// workload's own floor: every step must read the weights and the KV cache of its sequences, so
// sum over steps of (weight bytes + KV bytes read) / bandwidth bounds the wall time from below.
//
//   throughput_bench --model DIR [--device cuda] [--sequences 512] [--max-running 256]
//                    [--max-step-tokens 8192] [--prefill-chunk 2048] [--seed 0] [--no-graphs]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "model/backbone_factory.h"
#include "model/model.h"
#include "prometheus/registry.h"
#include "server/scheduler.h"
#include "server/worker_metrics.h"
#if ENGRAM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

ABSL_FLAG(std::string, model, "", "model directory");
ABSL_FLAG(std::string, device, "auto", "cuda|cpu|auto");
ABSL_FLAG(int, sequences, 512, "sequences of the offline workload");
ABSL_FLAG(int, max_running, 256, "most sequences in the running batch");
ABSL_FLAG(int, max_step_tokens, 8192, "most tokens per step");
ABSL_FLAG(int, prefill_chunk, 2048, "prompt tokens per sequence per step");
ABSL_FLAG(int, min_len, 100, "shortest prompt and output");
ABSL_FLAG(int, max_len, 1024, "longest prompt and output");
ABSL_FLAG(uint64_t, seed, 0, "workload seed");
ABSL_FLAG(double, gpu_memory_fraction, 0.9, "share of GPU memory for the backbone");
ABSL_FLAG(bool, graphs, true, "replay decode steps from CUDA graphs");
ABSL_FLAG(bool, single, true, "also measure B=1 decode");

namespace engram {
namespace {

// Counts the tokens of every request and wakes the bench when all are done.
class CountingSink : public GenerateSink {
 public:
  CountingSink(std::atomic<int64_t>* tokens, std::atomic<int>* done, std::atomic<int>* failed)
      : tokens_(tokens), done_(done), failed_(failed) {}
  void OnEvent(GenerateEvent event) override {
    if (first_ == absl::InfinitePast() && !event.token_ids.empty()) first_ = absl::Now();
    tokens_->fetch_add(static_cast<int64_t>(event.token_ids.size()));
    if (event.last) {
      if (!event.status.ok()) {
        std::fprintf(stderr, "request failed: %s\n", event.status.ToString().c_str());
        failed_->fetch_add(1);
      }
      last_ = absl::Now();
      done_->fetch_add(1);
    }
  }
  absl::Time first_ = absl::InfinitePast();
  absl::Time last_ = absl::InfinitePast();

 private:
  std::atomic<int64_t>* tokens_;
  std::atomic<int>* done_;
  std::atomic<int>* failed_;
};

double MeasureBandwidth() {
#if ENGRAM_HAVE_CUDA
  const size_t bytes = size_t(2) << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
  cudaMemset(a, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(start);
  const int reps = 10;
  for (int i = 0; i < reps; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaFree(a);
  cudaFree(b);
  // A copy reads and writes every byte.
  return 2.0 * bytes * reps / (ms / 1e3);
#else
  return 0;
#endif
}

struct Run {
  double seconds = 0;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  int failed = 0;
  double floor_seconds = 0;  // weights + KV read per step over the bandwidth
  uint64_t steps = 0;
};

Run Offline(const Model& model, Backbone& backbone,
            const std::vector<std::vector<uint32_t>>& prompts, const std::vector<int>& outputs,
            double bandwidth, size_t weight_bytes) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics metrics(registry, model.config().engram.layer_ids);
  SchedulerOptions o;
  o.max_running_requests = absl::GetFlag(FLAGS_max_running);
  o.max_queued_requests = static_cast<int>(prompts.size());
  o.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  o.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  o.max_context_tokens = model.config().max_position_embeddings;
  Scheduler scheduler(model, backbone, nullptr, metrics, o);
  const ModelConfig& c = model.config();
  const double kv_bytes_per_token = 2.0 * c.num_hidden_layers * c.kv_width() * 2;  // bf16 K and V
  Run run;
  scheduler.SetStepObserver([&](const StepInfo& info) {
    ++run.steps;
    double kv = 0;
    for (const auto& item : info.items) kv += double(item.begin + item.tokens) * kv_bytes_per_token;
    if (bandwidth > 0) run.floor_seconds += (double(weight_bytes) + kv) / bandwidth;
  });
  scheduler.Start();
  std::atomic<int64_t> tokens{0};
  std::atomic<int> done{0}, failed{0};
  std::vector<std::shared_ptr<CountingSink>> sinks;
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerateParams p;
    p.request_id = absl::StrCat("bench-", i);
    p.prompt = prompts[i];
    p.sampling.temperature = 0.6f;
    p.sampling.seed = i;
    p.stop.max_tokens = outputs[i];
    p.stop.ignore_eos = true;
    p.received = absl::Now();
    run.prompt_tokens += static_cast<int64_t>(prompts[i].size());
    auto sink = std::make_shared<CountingSink>(&tokens, &done, &failed);
    sinks.push_back(sink);
    absl::StatusOr<uint64_t> h = scheduler.Submit(std::move(p), sink);
    if (!h.ok()) {
      std::fprintf(stderr, "submit: %s\n", h.status().ToString().c_str());
      ++run.failed;
      done.fetch_add(1);
    }
  }
  while (done.load() < static_cast<int>(prompts.size())) absl::SleepFor(absl::Milliseconds(2));
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  run.output_tokens = tokens.load();
  run.failed += failed.load();
  scheduler.Stop();
  if (prompts.size() == 1) {
    // B=1: decode time only (from the first token to the last).
    run.seconds = absl::ToDoubleSeconds(sinks[0]->last_ - sinks[0]->first_);
    run.output_tokens -= 1;
  }
  return run;
}

int Main() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) {
    std::fprintf(stderr, "throughput_bench: --model DIR is required\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<const Model>> model = Model::Load(dir);
  if (!model.ok()) {
    std::fprintf(stderr, "throughput_bench: %s\n", model.status().ToString().c_str());
    return 1;
  }
  BackboneOptions bo;
  bo.device = absl::GetFlag(FLAGS_device);
  bo.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  bo.max_batch_sequences = absl::GetFlag(FLAGS_max_running);
  bo.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  bo.cuda_graphs = absl::GetFlag(FLAGS_graphs);
  absl::StatusOr<std::unique_ptr<Backbone>> backbone = CreateBackbone(**model, bo);
  if (!backbone.ok()) {
    std::fprintf(stderr, "throughput_bench: %s\n", backbone.status().ToString().c_str());
    return 1;
  }
  const ModelConfig& c = (*model)->config();
  size_t weight_bytes = 0;
  {
    // bf16 bytes of every backbone matrix (the embedding table is read only at the looked-up rows).
    const size_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_width(), KV = c.kv_width();
    weight_bytes = c.num_hidden_layers * (H * (Q + 2 * KV) + Q * H + 3 * H * I) * 2 +
                   size_t(c.vocab_size) * H * 2;
  }
  const double bandwidth = MeasureBandwidth();
  std::printf("device: %s\n", (*backbone)->device_name().c_str());
  std::printf("model: %s, %d layers, hidden %d, %.2f GB of bf16 matrices read per step\n",
              dir.c_str(), c.num_hidden_layers, c.hidden_size, weight_bytes / 1e9);
  std::printf("measured device-to-device bandwidth: %.0f GB/s\n", bandwidth / 1e9);
  const KvCapacity kv = (*backbone)->kv_capacity();
  std::printf("KV cache: %lld blocks of %d tokens (%lld tokens)\n",
              static_cast<long long>(kv.total_blocks), kv.block_tokens,
              static_cast<long long>(kv.total_blocks * kv.block_tokens));

  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  const int lo = absl::GetFlag(FLAGS_min_len), hi = absl::GetFlag(FLAGS_max_len);
  std::uniform_int_distribution<int> len(lo, hi);
  std::uniform_int_distribution<uint32_t> id(0, std::min(9999, c.vocab_size - 1));

  if (absl::GetFlag(FLAGS_single)) {
    std::vector<std::vector<uint32_t>> one(1, std::vector<uint32_t>(128));
    for (auto& t : one[0]) t = id(rng);
    Run r = Offline(**model, **backbone, one, {257}, 0, weight_bytes);
    const double tok_s = r.output_tokens / r.seconds;
    const double roofline = bandwidth > 0 ? bandwidth / weight_bytes : 0;
    std::printf("B=1 decode: %.1f tok/s; HBM roofline %.1f tok/s; ratio %.3f\n", tok_s, roofline,
                roofline > 0 ? tok_s / roofline : 0);
  }

  const int n = absl::GetFlag(FLAGS_sequences);
  std::vector<std::vector<uint32_t>> prompts(n);
  std::vector<int> outputs(n);
  for (int i = 0; i < n; ++i) {
    prompts[i].resize(len(rng));
    for (auto& t : prompts[i]) t = id(rng);
    outputs[i] = len(rng);
  }
  Run r = Offline(**model, **backbone, prompts, outputs, bandwidth, weight_bytes);
  const double tok_s = r.output_tokens / r.seconds;
  std::printf(
      "offline: %d sequences, %lld prompt + %lld output tokens in %.2f s over %llu steps: %.1f "
      "output tok/s (%d failed)\n",
      n, static_cast<long long>(r.prompt_tokens), static_cast<long long>(r.output_tokens),
      r.seconds, static_cast<unsigned long long>(r.steps), tok_s, r.failed);
  if (r.floor_seconds > 0) {
    std::printf(
        "workload floor (weights + KV read per step at the measured bandwidth): %.2f s, "
        "%.1f tok/s; ratio %.3f\n",
        r.floor_seconds, r.output_tokens / r.floor_seconds, r.floor_seconds / r.seconds);
  }
  std::printf("RESULT sequences=%d output_tok_s=%.1f seconds=%.2f failed=%d\n", n, tok_s, r.seconds,
              r.failed);
  return r.failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return engram::Main();
}
