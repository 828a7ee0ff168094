// Offline generation throughput through the worker's own scheduler and backbone, shaped like
// nano-vLLM's bench.py so the figures compare with published ones (docs/benchmarks.md):
//
//   N sequences (default 512; nano-vLLM's own script uses 256), prompt lengths U(100, 1024),
//   output lengths U(100, 1024), EOS ignored, temperature 0.6, fixed seed; all submitted at once;
//   throughput = output tokens / wall time including prefill.
//
// Beside it, in the same run: B=1 decode speed (a 128-token prompt, then 256 tokens) against the
// HBM roofline (weight bytes over the device-to-device bandwidth measured here), and the
// workload's own floor: every step must read the weights and the KV cache of its sequences, so
// sum over steps of (weight bytes + KV bytes read) / bandwidth bounds the wall time from below.
//
// The Engram offload experiment (docs/benchmarks.md, "Engram rows at GPU speed") runs several
// configurations of the same workload in one process, one after the other, and prints each one's
// throughput as a ratio to (a):
//   (a) the dense model without Engram (--dense_model, or --model when it has no Engram layer);
//   (b) Engram with its rows in the worker's own memory, no tier (the model's tables, or rows
//       generated in-process exactly as `engram table synth` wrote them): the module's cost alone;
//       it stands for the table in HBM until the backbone gathers from an HBM table;
//   (c) rows from engram-memory's DRAM arena, co-located (the paper's setup): a tier is started
//       in-process on --store with the whole table resident, or --memory names a running one. On
//       the GPU the backbone reads the arena in place by row id over PCIe (--rows_by_id, default;
//       false: the host copies and decodes the rows first);
//   (d) (c) plus the HBM hot-row cache of --hbm_cache_gib, filled at start from the tier's hot
//       list (its persisted statistics: run `engram table profile` on the corpus first); GPU only;
//   (e) a tier whose DRAM only caches the table (--dram_share_e of its bytes), the rest on NVMe,
//       or --memory_e names a running one.
// Two workloads (--workloads):
//   random  prompt ids uniform in [0, 10000), as nano-vLLM: no hot set;
//   text    prompts cut from held-out text of --replay_corpus (bytes from --heldout_from on), each
//           sequence's decode tokens replayed from the same text (the sampled token is replaced:
//           GenerateParams::replay_tokens), so Engram rows follow natural n-gram statistics.
// Per configuration it also prints the rows used per source (shared-memory arena, tier DRAM, tier
// NVMe), the mean time a step waited for rows, and how many sequence-steps sat out for cold rows
// (--cold_rows sit-out|wait picks the scheduler's policy).
//
//   throughput_bench --model DIR [--device cuda] [--sequences 512] [--max_running 256]
//                    [--max_step_tokens 8192] [--prefill_chunk 2048] [--seed 0] [--nographs]
//                    [--configs a,b,c,e --dense_model DIR --store DIR] [--workloads random,text
//                    --replay_corpus FILE --heldout_from BYTES]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/random_requests.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/status.h"
#include "memory_tier/catalog.h"
#include "memory_tier/table_synth.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "model/backbone_factory.h"
#include "model/engram_constants.h"
#include "model/hot_row_cache.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prometheus/registry.h"
#include "server/engram_rows.h"
#include "server/hot_row_source.h"
#include "server/scheduler.h"
#include "server/tier_rows.h"
#include "server/worker_metrics.h"
#if ENGRAM_HAVE_CUDA
#include <cuda_runtime.h>

#include "model/cuda/cuda_backbone.h"
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
ABSL_FLAG(bool, gemv, true, "few-row linear layers through the own GEMV kernel, not cuBLASLt");
ABSL_FLAG(bool, single, true, "also measure B=1 decode (first configuration only)");
ABSL_FLAG(int, threads, 0, "CPU backbone threads (0 = all)");
ABSL_FLAG(std::string, configs, "",
          "comma-separated configurations: a (dense), b (rows in-process), c (tier DRAM arena), "
          "d (c + HBM hot-row cache), e (tier with NVMe); default a for a dense --model, else b");
ABSL_FLAG(std::string, dense_model, "",
          "model of configuration (a) when --model has Engram layers: the same backbone without "
          "them (engram model init-random with the same preset)");
ABSL_FLAG(std::string, workloads, "random", "comma-separated: random, text");
ABSL_FLAG(std::string, replay_corpus, "", "text corpus of the text workload");
ABSL_FLAG(int64_t, heldout_from, 0, "byte offset of the corpus's held-out part");
ABSL_FLAG(int64_t, replay_max_bytes, int64_t{32} << 20, "held-out bytes tokenized at most");
ABSL_FLAG(std::string, store, "",
          "store holding --model's tables (engram table import|synth): (c) and (e) start "
          "engram-memory on it in-process");
ABSL_FLAG(std::string, memory, "", "(c): address of a running engram-memory instead of --store");
ABSL_FLAG(std::string, memory_e, "", "(e): address of a running engram-memory instead of --store");
ABSL_FLAG(int64_t, dram_bytes_c, 0, "(c) DRAM budget in bytes; 0 = every table + 64 MiB");
ABSL_FLAG(double, dram_share_e, 0.25, "(e) DRAM budget as a share of the tables' bytes");
ABSL_FLAG(std::string, io_backend, "uring", "(c)/(e) engram-memory's NVMe reads: uring|pread");
ABSL_FLAG(double, hbm_cache_gib, 1, "(d) HBM hot-row cache size in GiB");
ABSL_FLAG(uint32_t, hbm_hot_rows, 100000,
          "(d) rows per table of the tier's hot list that fill the HBM cache at start");
ABSL_FLAG(bool, rows_by_id, true,
          "(c), (d) on the GPU: the GPU reads the tier's resident arena in place by row id (the "
          "paper's setup); false: the host copies and decodes the rows to f32 first");
ABSL_FLAG(std::string, cold_rows, "sit-out", "scheduler policy for cold rows: sit-out|wait");
ABSL_FLAG(double, rows_timeout_s, 60, "longest wait for Engram rows");
ABSL_FLAG(uint64_t, synth_seed, 0,
          "(b) seed of the table when --model's files hold none (engram table synth --seed)");
ABSL_FLAG(std::string, synth_dtype, "fp8_e4m3_e8m0", "(b) row format of the synthesised table");

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

// Rows generated in-process exactly as `engram table synth` wrote them (SynthRow), decoded at
// fetch time: configuration (b) for a model whose tables live only in the store.
class SynthRowBackend : public RowBackend {
 public:
  SynthRowBackend(uint64_t seed, RowDType dtype, std::vector<int> layer_ids, int head_dim)
      : seed_(seed), dtype_(dtype), layer_ids_(std::move(layer_ids)), head_dim_(head_dim) {}
  void Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t, uint64_t) override {
    const size_t row_bytes = *RowBytes(dtype_, head_dim_);
    std::vector<uint8_t> raw(row_bytes);
    const uint32_t layer = static_cast<uint32_t>(layer_ids_[fetch->engram_layer_index()]);
    float* out = fetch->mutable_rows();
    for (uint64_t id : fetch->row_ids()) {
      SynthRow(seed_, layer, id, dtype_, head_dim_, raw.data());
      absl::Status s = DecodeRows(dtype_, raw.data(), 1, head_dim_, out);
      if (!s.ok()) return fetch->Complete(s);
      out += head_dim_;
    }
    fetch->Complete(absl::OkStatus());
  }
  absl::Status Ready() const override { return absl::OkStatus(); }
  std::string Name() const override { return "rows generated in-process"; }

 private:
  const uint64_t seed_;
  const RowDType dtype_;
  const std::vector<int> layer_ids_;
  const int head_dim_;
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

// One workload: prompts, output lengths and (text) the tokens each decode step replays.
struct Workload {
  std::string name;
  std::vector<std::vector<uint32_t>> prompts;
  std::vector<int> outputs;
  std::vector<std::vector<uint32_t>> replay;  // empty for random
};

struct Run {
  double seconds = 0;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  int failed = 0;
  double floor_seconds = 0;  // weights + KV read per step over the bandwidth
  uint64_t steps = 0;
  // Engram rows by source, the steps' waits for rows and the sit-outs.
  double rows_arena = 0, rows_dram = 0, rows_nvme = 0;
  double stall_seconds = 0;
  double sat_out = 0;
};

// `row_metrics`: where the row source counts rows by source (the tier client's metrics), or null.
// `rows_by_id`: the backbone reads the Engram tables itself and steps hand it row ids.
Run Offline(const Model& model, Backbone& backbone, RowBackend* rows, WorkerMetrics* row_metrics,
            const Workload& w, double bandwidth, size_t weight_bytes, bool rows_by_id) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics metrics(registry, model.config().engram.layer_ids);
  SchedulerOptions o;
  o.max_running_requests = absl::GetFlag(FLAGS_max_running);
  o.max_queued_requests = static_cast<int>(w.prompts.size());
  o.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  o.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  o.max_context_tokens = model.config().max_position_embeddings;
  o.rows_timeout = absl::Seconds(absl::GetFlag(FLAGS_rows_timeout_s));
  o.cold_rows =
      absl::GetFlag(FLAGS_cold_rows) == "wait" ? ColdRows::kWaitInStep : ColdRows::kSitOut;
  o.rows_by_id = rows_by_id;
  Scheduler scheduler(model, backbone, model.config().has_engram() ? rows : nullptr, metrics, o);
  const ModelConfig& c = model.config();
  const double kv_bytes_per_token = 2.0 * c.num_hidden_layers * c.kv_width() * 2;  // bf16 K and V
  Run run;
  scheduler.SetStepObserver([&](const StepInfo& info) {
    ++run.steps;
    double kv = 0;
    for (const auto& item : info.items) kv += double(item.begin + item.tokens) * kv_bytes_per_token;
    if (bandwidth > 0) run.floor_seconds += (double(weight_bytes) + kv) / bandwidth;
  });
  WorkerMetrics& counted = row_metrics != nullptr ? *row_metrics : metrics;
  const double arena0 = counted.engram_rows(RowTier::kDramShm).Value();
  const double dram0 = counted.engram_rows(RowTier::kDram).Value();
  const double nvme0 = counted.engram_rows(RowTier::kNvme).Value();
  scheduler.Start();
  std::atomic<int64_t> tokens{0};
  std::atomic<int> done{0}, failed{0};
  std::vector<std::shared_ptr<CountingSink>> sinks;
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    GenerateParams p;
    p.request_id = absl::StrCat("bench-", i);
    p.prompt = w.prompts[i];
    p.sampling.temperature = 0.6f;
    p.sampling.seed = i;
    p.stop.max_tokens = w.outputs[i];
    p.stop.ignore_eos = true;
    if (!w.replay.empty()) p.replay_tokens = w.replay[i];
    p.received = absl::Now();
    run.prompt_tokens += static_cast<int64_t>(w.prompts[i].size());
    auto sink = std::make_shared<CountingSink>(&tokens, &done, &failed);
    sinks.push_back(sink);
    absl::StatusOr<uint64_t> h = scheduler.Submit(std::move(p), sink);
    if (!h.ok()) {
      std::fprintf(stderr, "submit: %s\n", h.status().ToString().c_str());
      ++run.failed;
      done.fetch_add(1);
    }
  }
  while (done.load() < static_cast<int>(w.prompts.size())) absl::SleepFor(absl::Milliseconds(2));
  run.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  run.output_tokens = tokens.load();
  run.failed += failed.load();
  scheduler.Stop();
  if (w.prompts.size() == 1) {
    // B=1: decode time only (from the first token to the last).
    run.seconds = absl::ToDoubleSeconds(sinks[0]->last_ - sinks[0]->first_);
    run.output_tokens -= 1;
  }
  run.rows_arena = counted.engram_rows(RowTier::kDramShm).Value() - arena0;
  run.rows_dram = counted.engram_rows(RowTier::kDram).Value() - dram0;
  run.rows_nvme = counted.engram_rows(RowTier::kNvme).Value() - nvme0;
  run.stall_seconds = metrics.step_stall.Collect().histogram.sample_sum;
  run.sat_out = metrics.sat_out.Value();
  return run;
}

// Random prompt ids as nano-vLLM draws them (bench/random_requests.h).
Workload RandomWorkload(const ModelConfig& c, int n) {
  RandomRequests r = DrawRandomRequests(absl::GetFlag(FLAGS_seed), n, absl::GetFlag(FLAGS_min_len),
                                        absl::GetFlag(FLAGS_max_len),
                                        static_cast<uint32_t>(std::min(9999, c.vocab_size - 1)));
  Workload w;
  w.name = "random";
  w.prompts = std::move(r.prompts);
  w.outputs = std::move(r.outputs);
  return w;
}

// Prompts and replayed outputs cut at random places of the held-out text (same lengths as the
// random workload draws).
absl::StatusOr<Workload> TextWorkload(const Tokenizer& tokenizer, int n) {
  const std::string path = absl::GetFlag(FLAGS_replay_corpus);
  if (path.empty()) return absl::InvalidArgumentError("the text workload needs --replay_corpus");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  in.seekg(absl::GetFlag(FLAGS_heldout_from));
  std::string text(static_cast<size_t>(absl::GetFlag(FLAGS_replay_max_bytes)), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  // Byte offsets may fall inside a UTF-8 character: start and end on character boundaries.
  size_t b = 0;
  while (b < text.size() && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) ++b;
  size_t e = text.size();
  while (e > b && (static_cast<uint8_t>(text[e - 1]) & 0xC0) == 0x80) --e;
  if (e > b && static_cast<uint8_t>(text[e - 1]) >= 0xC0) --e;  // a lead byte without its tail
  absl::StatusOr<std::vector<uint32_t>> tokens = tokenizer.Encode(text.substr(b, e - b));
  if (!tokens.ok()) return tokens.status();
  const int hi = absl::GetFlag(FLAGS_max_len);
  if (tokens->size() < static_cast<size_t>(4 * hi)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " from byte ", absl::GetFlag(FLAGS_heldout_from), " gives ", tokens->size(),
        " tokens; the text workload needs several times 2 x --max_len"));
  }
  Workload w;
  w.name = "text";
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::uniform_int_distribution<int> len(absl::GetFlag(FLAGS_min_len), hi);
  for (int i = 0; i < n; ++i) {
    const int plen = len(rng), olen = len(rng);
    std::uniform_int_distribution<size_t> at(0, tokens->size() - plen - olen);
    const size_t s = at(rng);
    w.prompts.emplace_back(tokens->begin() + s, tokens->begin() + s + plen);
    w.replay.emplace_back(tokens->begin() + s + plen, tokens->begin() + s + plen + olen);
    w.outputs.push_back(olen);
  }
  std::printf("text workload: %zu held-out tokens from %s at byte %lld\n", tokens->size(),
              path.c_str(), static_cast<long long>(absl::GetFlag(FLAGS_heldout_from)));
  return w;
}

// The HBM cache's offline oracle for a replayed workload (its outputs known in advance): the share
// of Engram layer `li`'s row lookups that fall on the `capacity` rows this very workload reads
// most, counted over every token it feeds (each prompt, then its replayed tokens but the last,
// whose successor is never computed), as if loaded before the first step.
absl::StatusOr<double> StaticOracleHitRate(const Model& m, const Workload& w, int li,
                                           uint64_t capacity) {
  const EngramHashConstants& hash = m.hash_constants();
  absl::flat_hash_map<int64_t, uint32_t> counts;
  uint64_t lookups = 0;
  std::vector<int64_t> rows;
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    std::vector<uint32_t> fed = w.prompts[i];
    const size_t replayed = std::min<size_t>(w.replay[i].size(), std::max(w.outputs[i] - 1, 0));
    fed.insert(fed.end(), w.replay[i].begin(), w.replay[i].begin() + replayed);
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> ids, m.engram_constants().Compress(fed));
    rows.resize(ids.size() * hash.columns());
    ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, {}, ids, absl::MakeSpan(rows)));
    for (int64_t r : rows) ++counts[r];
    lookups += rows.size();
  }
  std::vector<uint32_t> c;
  c.reserve(counts.size());
  for (const auto& [row, n] : counts) c.push_back(n);
  if (capacity < c.size()) {
    std::nth_element(c.begin(), c.begin() + capacity, c.end(), std::greater<uint32_t>());
    c.resize(capacity);
  }
  uint64_t hits = 0;
  for (uint32_t n : c) hits += n;
  std::printf("    oracle, layer %d: %llu lookups of %zu distinct rows; the %llu most read take "
              "%.1f%%\n",
              m.config().engram.layer_ids[li], static_cast<unsigned long long>(lookups),
              counts.size(), static_cast<unsigned long long>(capacity),
              lookups ? 100.0 * hits / lookups : 0.0);
  return lookups ? double(hits) / lookups : 0.0;
}

// Bytes of the live row files of `model`'s Engram tables in `store`.
absl::StatusOr<uint64_t> TableBytes(const std::string& store, const Model& model) {
  ENGRAM_ASSIGN_OR_RETURN(auto catalog, Catalog::Open(store, Catalog::Mode::kReadOnly));
  uint64_t bytes = 0;
  for (int layer : model.config().engram.layer_ids) {
    ENGRAM_ASSIGN_OR_RETURN(auto t, catalog->GetTable(model.name(), static_cast<uint32_t>(layer)));
    if (!t || t->live_version == 0) {
      return absl::NotFoundError(absl::StrCat(store, " has no table of ", model.name(), " layer ",
                                              layer, " (engram table synth|import)"));
    }
    ENGRAM_ASSIGN_OR_RETURN(Manifest m, catalog->GetManifest(model.name(), layer, t->live_version));
    bytes += m.file_bytes;
  }
  return bytes;
}

// engram-memory in-process on --store with `dram_bytes` of DRAM.
absl::StatusOr<std::unique_ptr<TierServer>> StartTier(uint64_t dram_bytes, const char* tag) {
  TierConfig c;
  c.store.dir = absl::GetFlag(FLAGS_store);
  c.server.listen = "127.0.0.1:0";
  c.server.metrics_port = -1;
  c.store.verify = "quick";
  c.dram.bytes = dram_bytes;
  c.dram.lock = false;
  c.dram.shm_prefix = absl::StrCat("engram-bench-", getpid(), "-", tag);
  c.nvme.io_backend = absl::GetFlag(FLAGS_io_backend);
  // Each configuration starts from the store's statistics as they were before the benchmark
  // (e.g. an `engram table profile` run), not from the traffic of the configuration before it.
  c.placement.persist_stats = false;
  // The tier keeps (and so can hand out as its hot list) only its tracked rows: as many as (d)
  // asks for, not the default 65,536.
  c.placement.tracked_rows =
      std::max<uint64_t>(c.placement.tracked_rows, absl::GetFlag(FLAGS_hbm_hot_rows));
  return TierServer::Start(c);
}

// The GPU's view of a co-located tier's tables for (c) and (d): every Engram table resident in the
// tier's shared-memory arena, read in place over PCIe. With `hot_from` (the tier's address, (d)),
// an HBM hot-row cache of --hbm_cache_gib in all, shared by the layers in proportion to their rows
// and filled at start from the tier's hot list (its persisted access statistics, e.g. those of an
// `engram table profile` run on the corpus). *mappings keep the arenas mapped: hold them until
// the backbone is gone.
absl::StatusOr<std::vector<EngramDeviceTable>> DeviceTables(
    const Model& m, TierRowBackend& backend, const std::string& hot_from,
    std::vector<std::shared_ptr<const void>>* mappings) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ResidentTable> resident, backend.ResidentTables());
  const GlobalRowIds ids(m.hash_constants().rows_per_layer);
  std::vector<std::vector<uint64_t>> hot(resident.size());
  double cache_bytes = 0;
  if (!hot_from.empty()) {
    cache_bytes = absl::GetFlag(FLAGS_hbm_cache_gib) * double(uint64_t{1} << 30);
    ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<TierClient> client,
                            TierClient::Connect({.address = hot_from}));
    ENGRAM_ASSIGN_OR_RETURN(std::vector<HotKeyCount> list,
                            FetchTierHotList(*client, m.name(), m.config().engram.layer_ids, ids,
                                             absl::GetFlag(FLAGS_hbm_hot_rows)));
    const std::vector<uint64_t>& bases = ids.bases();
    for (const HotKeyCount& h : list) {
      const size_t li = std::upper_bound(bases.begin(), bases.end(), h.key) - bases.begin() - 1;
      hot[li].push_back(h.key - bases[li]);
    }
    size_t listed = 0;
    for (const auto& h : hot) listed += h.size();
    std::printf("(d) hot list from the tier: %zu rows\n", listed);
  }
  std::vector<EngramDeviceTable> tables;
  for (size_t li = 0; li < resident.size(); ++li) {
    const ResidentTable& r = resident[li];
    EngramDeviceTable t;
    t.dtype = r.dtype;
    t.head_dim = r.head_dim;
    t.rows = r.rows;
    t.host = r.data;
    t.stride = r.stride;
    t.hbm_cache_bytes =
        static_cast<size_t>(cache_bytes * double(r.rows) / double(ids.total_rows()));
    t.hot_rows = std::move(hot[li]);
    tables.push_back(std::move(t));
    mappings->push_back(r.mapping);
  }
  return tables;
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
  const bool engram = (*model)->config().has_engram();
  std::vector<std::string> configs =
      absl::StrSplit(absl::GetFlag(FLAGS_configs), ',', absl::SkipEmpty());
  if (configs.empty()) configs = {engram ? "b" : "a"};
  for (const std::string& c : configs) {
    if (c.size() != 1 || c[0] < 'a' || c[0] > 'e') {
      std::fprintf(stderr, "throughput_bench: --configs: \"%s\" is not one of a, b, c, d, e\n",
                   c.c_str());
      return 2;
    }
    if (c != "a" && !engram) {
      std::fprintf(stderr, "throughput_bench: configuration %s needs a --model with Engram\n",
                   c.c_str());
      return 2;
    }
  }
  const std::string cold_rows = absl::GetFlag(FLAGS_cold_rows);
  if (cold_rows != "sit-out" && cold_rows != "wait") {
    std::fprintf(stderr, "throughput_bench: --cold_rows must be sit-out or wait\n");
    return 2;
  }
  auto has = [&](const char* c) { return std::find(configs.begin(), configs.end(), c) != configs.end(); };
  std::unique_ptr<const Model> dense;
  if (has("a") && engram) {
    if (absl::GetFlag(FLAGS_dense_model).empty()) {
      std::fprintf(stderr,
                   "throughput_bench: configuration a with an Engram --model needs "
                   "--dense_model DIR (the same backbone without Engram)\n");
      return 2;
    }
    auto d = Model::Load(absl::GetFlag(FLAGS_dense_model));
    if (!d.ok()) {
      std::fprintf(stderr, "throughput_bench: %s\n", d.status().ToString().c_str());
      return 1;
    }
    if ((*d)->config().has_engram()) {
      std::fprintf(stderr, "throughput_bench: --dense_model has Engram layers\n");
      return 2;
    }
    dense = *std::move(d);
  }
  if ((has("c") && absl::GetFlag(FLAGS_memory).empty() && absl::GetFlag(FLAGS_store).empty()) ||
      (has("e") && absl::GetFlag(FLAGS_memory_e).empty() && absl::GetFlag(FLAGS_store).empty())) {
    std::fprintf(stderr, "throughput_bench: configurations c and e need --store (or --memory / "
                         "--memory_e)\n");
    return 2;
  }

  BackboneOptions bo;
  bo.device = absl::GetFlag(FLAGS_device);
  bo.threads = absl::GetFlag(FLAGS_threads);
  bo.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  bo.max_batch_sequences = absl::GetFlag(FLAGS_max_running);
  bo.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  bo.cuda_graphs = absl::GetFlag(FLAGS_graphs);
  bo.gemv = absl::GetFlag(FLAGS_gemv);
  const bool cuda = bo.device == "cuda" || (bo.device == "auto" && CudaDeviceVisible());
  const ModelConfig& c = (*model)->config();
  size_t weight_bytes = 0;
  {
    // bf16 bytes of every backbone matrix (the embedding table is read only at the looked-up rows).
    const size_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_width(), KV = c.kv_width();
    weight_bytes = c.num_hidden_layers * (H * (Q + 2 * KV) + Q * H + 3 * H * I) * 2 +
                   size_t(c.vocab_size) * H * 2;
  }
  const double bandwidth = MeasureBandwidth();
  std::printf("model: %s, %d layers, hidden %d, %.2f GB of bf16 matrices read per step\n",
              dir.c_str(), c.num_hidden_layers, c.hidden_size, weight_bytes / 1e9);
  if (engram) {
    int64_t rows = 0;
    for (int64_t r : (*model)->hash_constants().rows_per_layer) rows += r;
    std::printf("engram: layers %s, %d orders x %d heads of %d, %lld table rows (%.1fB params)\n",
                absl::StrJoin(c.engram.layer_ids, ",").c_str(), c.engram.num_orders(),
                c.engram.n_heads, c.engram.head_dim, static_cast<long long>(rows),
                double(rows) * c.engram.head_dim / 1e9);
  }
  std::printf("measured device-to-device bandwidth: %.0f GB/s\n", bandwidth / 1e9);

  const int n = absl::GetFlag(FLAGS_sequences);
  std::vector<Workload> workloads;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_workloads), ',')) {
    if (name == "random") {
      workloads.push_back(RandomWorkload(c, n));
    } else if (name == "text") {
      auto w = TextWorkload((*model)->tokenizer(), n);
      if (!w.ok()) {
        std::fprintf(stderr, "throughput_bench: %s\n", w.status().ToString().c_str());
        return 2;
      }
      workloads.push_back(*std::move(w));
    } else {
      std::fprintf(stderr, "throughput_bench: --workloads: unknown \"%s\" (random, text)\n",
                   std::string(name).c_str());
      return 2;
    }
  }

  uint64_t table_bytes = 0;
  if ((has("c") && absl::GetFlag(FLAGS_memory).empty()) ||
      (has("e") && absl::GetFlag(FLAGS_memory_e).empty())) {
    auto b = TableBytes(absl::GetFlag(FLAGS_store), **model);
    if (!b.ok()) {
      std::fprintf(stderr, "throughput_bench: %s\n", b.status().ToString().c_str());
      return 1;
    }
    table_bytes = *b;
  }

  // results[workload][config]
  std::map<std::string, std::map<std::string, Run>> results;
  bool failed = false, single_done = !absl::GetFlag(FLAGS_single);
  for (const std::string& config : configs) {
    const Model& m = config == "a" && dense ? *dense : **model;
    std::unique_ptr<TierServer> tier;
    // The tier client counts rows by source in its own metrics (declared before it: outlive it).
    std::unique_ptr<WorkerMetrics> row_metrics;
    std::unique_ptr<RowBackend> rows;
    std::string label;
    // This configuration's backbone options: (c) and (d) add the tables the GPU reads by id.
    BackboneOptions cbo = bo;
    bool by_id = false;
    std::vector<std::shared_ptr<const void>> mappings;  // outlive the backbone (declared later)
    auto fail = [&](const absl::Status& s) {
      std::fprintf(stderr, "throughput_bench: configuration %s: %s\n", config.c_str(),
                   s.ToString().c_str());
      failed = true;
    };
    if (config == "a") {
      label = "(a) dense, no Engram";
    } else if (config == "b") {
      label = "(b) Engram, rows in the worker (no tier)";
      auto local = LocalRowBackend::Create(m);
      if (local.ok()) {
        rows = *std::move(local);
      } else {
        auto dtype = ParseRowDType(absl::GetFlag(FLAGS_synth_dtype));
        if (!dtype.ok()) {
          fail(dtype.status());
          continue;
        }
        rows = std::make_unique<SynthRowBackend>(absl::GetFlag(FLAGS_synth_seed), *dtype,
                                                 m.config().engram.layer_ids,
                                                 m.config().engram.head_dim);
        label += ", synthesised rows";
      }
    } else {  // c, d, e: a real engram-memory, co-located
      const bool e = config == "e";
      std::string address = absl::GetFlag(e ? FLAGS_memory_e : FLAGS_memory);
      if (address.empty()) {
        const uint64_t dram =
            e ? static_cast<uint64_t>(absl::GetFlag(FLAGS_dram_share_e) * table_bytes)
              : absl::GetFlag(FLAGS_dram_bytes_c) > 0
                  ? static_cast<uint64_t>(absl::GetFlag(FLAGS_dram_bytes_c))
                  : table_bytes + (uint64_t{64} << 20);
        std::printf("%s: starting engram-memory on %s with %.2f GB of DRAM for %.2f GB of tables\n",
                    config.c_str(), absl::GetFlag(FLAGS_store).c_str(), dram / 1e9,
                    table_bytes / 1e9);
        auto t = StartTier(dram, config.c_str());
        if (!t.ok()) {
          fail(t.status());
          continue;
        }
        tier = *std::move(t);
        address = absl::StrCat("127.0.0.1:", tier->port());
      }
      label = e               ? "(e) engram-memory, DRAM caches the table, rest on NVMe"
              : config == "d" ? "(d) engram-memory DRAM arena + HBM hot-row cache"
                              : "(c) engram-memory DRAM arena (shared memory)";
      label += absl::StrCat(" at ", address);
      row_metrics = std::make_unique<WorkerMetrics>(std::make_shared<prometheus::Registry>(),
                                                    m.config().engram.layer_ids);
      TierRowBackendOptions to;
      to.address = address;
      auto backend = std::make_unique<TierRowBackend>(m, to, *row_metrics);
      backend->Start();
      for (int i = 0; i < 600 && !backend->Ready().ok(); ++i) absl::SleepFor(absl::Milliseconds(50));
      if (!backend->Ready().ok()) {
        fail(backend->Ready());
        continue;
      }
      if (!e && cuda && absl::GetFlag(FLAGS_rows_by_id)) {
        absl::StatusOr<std::vector<EngramDeviceTable>> tables =
            config == "d" ? DeviceTables(m, *backend, address, &mappings)
                          : DeviceTables(m, *backend, "", &mappings);
        if (!tables.ok()) {
          fail(tables.status());
          continue;
        }
        cbo.engram_tables = *std::move(tables);
        backend->SetRowsReadByDevice(true);
        by_id = true;
        label += config == "d" ? absl::StrCat(", rows by id, ", absl::GetFlag(FLAGS_hbm_cache_gib),
                                              " GiB HBM cache")
                               : ", rows by id (read in place over PCIe)";
      } else if (config == "d") {
        fail(absl::FailedPreconditionError(
            "(d) needs the CUDA backbone reading rows by id (--device cuda --rows_by_id)"));
        continue;
      } else if (!e) {
        label += ", rows copied and decoded by the host";
      }
      rows = std::move(backend);
    }
    absl::StatusOr<std::unique_ptr<Backbone>> backbone = CreateBackbone(m, cbo);
    if (!backbone.ok()) {
      fail(backbone.status());
      continue;
    }
    std::printf("%s on %s\n", label.c_str(), (*backbone)->device_name().c_str());
    if (!single_done) {
      single_done = true;
      std::vector<uint32_t> one = RandomWorkload(m.config(), 1).prompts[0];
      one.resize(std::min<size_t>(one.size(), 128));
      Workload w{"single", {one}, {257}, {}};
      Run r = Offline(m, **backbone, rows.get(), row_metrics.get(), w, 0, weight_bytes, by_id);
      const double tok_s = r.output_tokens / r.seconds;
      const double roofline = bandwidth > 0 ? bandwidth / weight_bytes : 0;
      std::printf("  B=1 decode: %.1f tok/s; HBM roofline %.1f tok/s; ratio %.3f\n", tok_s,
                  roofline, roofline > 0 ? tok_s / roofline : 0);
    }
#if ENGRAM_HAVE_CUDA
    std::map<int, EngramRowCounts> gathered;  // per Engram layer index, before this workload
    if (auto* gpu = dynamic_cast<CudaBackbone*>(backbone->get()); gpu != nullptr && by_id) {
      for (int li = 0; li < int(m.config().engram.layer_ids.size()); ++li) {
        gathered[li] = gpu->engram_row_counts(li);
      }
    }
#endif
    for (const Workload& w : workloads) {
      Run r =
          Offline(m, **backbone, rows.get(), row_metrics.get(), w, bandwidth, weight_bytes, by_id);
      const double tok_s = r.output_tokens / r.seconds;
      std::printf(
          "  %s: %zu sequences, %lld prompt + %lld output tokens in %.2f s over %llu steps: %.1f "
          "output tok/s (%d failed)\n",
          w.name.c_str(), w.prompts.size(), static_cast<long long>(r.prompt_tokens),
          static_cast<long long>(r.output_tokens), r.seconds,
          static_cast<unsigned long long>(r.steps), tok_s, r.failed);
      if (r.floor_seconds > 0) {
        std::printf("    workload floor (weights + KV read per step): %.2f s; ratio %.3f\n",
                    r.floor_seconds, r.floor_seconds / r.seconds);
      }
      const double all_rows = r.rows_arena + r.rows_dram + r.rows_nvme;
      if (all_rows > 0) {
        std::printf("    rows by source: arena (shared memory) %.1f%%, tier DRAM %.1f%%, tier NVMe "
                    "%.1f%% of %.0f\n",
                    100 * r.rows_arena / all_rows, 100 * r.rows_dram / all_rows,
                    100 * r.rows_nvme / all_rows, all_rows);
      }
#if ENGRAM_HAVE_CUDA
      if (by_id) {
        // Rows the GPU gathered by id in this workload, per source.
        auto* gpu = dynamic_cast<CudaBackbone*>(backbone->get());
        for (int li = 0; gpu != nullptr && li < int(m.config().engram.layer_ids.size()); ++li) {
          const EngramRowCounts now = gpu->engram_row_counts(li);
          EngramRowCounts& before = gathered[li];
          const EngramRowCounts n{now.hbm - before.hbm, now.staging - before.staging,
                                  now.table - before.table, now.missing - before.missing};
          before = now;
          const double all = double(n.hbm + n.staging + n.table + n.missing);
          std::printf(
              "    GPU gather, layer %d: HBM cache %.1f%% (%llu cached rows), arena over "
              "PCIe %.1f%%, staging %.1f%%, missing %llu\n",
              m.config().engram.layer_ids[li], all > 0 ? 100 * n.hbm / all : 0.0,
              static_cast<unsigned long long>(gpu->hbm_cache_rows(li)),
              all > 0 ? 100 * n.table / all : 0.0, all > 0 ? 100 * n.staging / all : 0.0,
              static_cast<unsigned long long>(n.missing));
          if (config == "d" && !w.replay.empty() && all > 0) {
            // The same rows' static oracle: how far the online cache is from the best fixed one.
            absl::StatusOr<double> oracle =
                StaticOracleHitRate(m, w, li, gpu->hbm_cache_rows(li));
            if (oracle.ok()) {
              std::printf("    HBM cache hit rate %.1f%% vs the static oracle's %.1f%% of the same "
                          "size: %+.1f points\n",
                          100 * n.hbm / all, 100 * *oracle, 100 * (n.hbm / all - *oracle));
            } else {
              fail(oracle.status());
            }
          }
        }
      }
#endif
      if (m.config().has_engram()) {
        std::printf("    rows waited for: %.3f ms per step (%.2f s in all); %.0f sequence-steps "
                    "sat out for cold rows\n",
                    r.steps ? 1e3 * r.stall_seconds / r.steps : 0.0, r.stall_seconds, r.sat_out);
      }
      if (r.failed > 0) failed = true;
      results[w.name][config] = r;
      std::printf("RESULT config=%s workload=%s sequences=%zu output_tok_s=%.1f seconds=%.2f "
                  "failed=%d\n",
                  config.c_str(), w.name.c_str(), w.prompts.size(), tok_s, r.seconds, r.failed);
    }
    rows.reset();
    if (tier) tier->Shutdown();
  }

  // Ratios against (a) measured in this run.
  for (const Workload& w : workloads) {
    auto& by = results[w.name];
    if (!by.count("a")) continue;
    const double base = by["a"].output_tokens / by["a"].seconds;
    std::printf("%s workload, throughput relative to (a) %.1f tok/s:\n", w.name.c_str(), base);
    for (const auto& [config, r] : by) {
      const double tok_s = r.output_tokens / r.seconds;
      std::printf("  (%s) %.1f tok/s  ratio %.4f  (%+.2f%%)\n", config.c_str(), tok_s, tok_s / base,
                  100 * (tok_s / base - 1));
    }
  }
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  // A crash prints where it happened; progress lines reach a pipe before it.
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler({});
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  absl::ParseCommandLine(argc, argv);
  return engram::Main();
}
