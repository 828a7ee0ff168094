// Online load through the worker's public gRPC API: concurrent streaming Generate calls against a
// running engram-worker, at several concurrency levels, one level after the other
// (docs/benchmarks.md):
//
//   each level c keeps c streams busy; a stream sends its next request the moment the previous one
//   ends, until the level's requests are done (min(--requests, c * --requests_per_stream));
//   requests are nano-vLLM-shaped like throughput_bench's: prompt ids uniform in [0, 10000),
//   prompt and output lengths U(--min_len, --max_len), EOS ignored, temperature 0.6, fixed seeds.
//
// Per level it prints:
//   output tok/s   output tokens / the level's wall time (first send to last end);
//   TTFT           send -> first streamed token, percentiles over requests;
//   ITL            gap between consecutive streamed messages of one request, per token it carries
//                  (the first message's tokens are TTFT's), percentiles over all gaps;
// and the ratio of each level's tok/s to the first level's, measured in the same run. The offline
// figure of the same workload is throughput_bench's (the scheduler and backbone in process, every
// sequence submitted at once); docs/benchmarks.md compares the two.
//
//   online_bench --server 127.0.0.1:50051 [--concurrency 1,16,64,256] [--requests 512]
//                [--requests_per_stream 4] [--min_len 100 --max_len 1024] [--seed 0]
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/percentile.h"
#include "bench/random_requests.h"
#include "client/engram_client.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "engram-worker gRPC address");
ABSL_FLAG(std::string, concurrency, "1,16,64,256", "comma-separated concurrency levels");
ABSL_FLAG(int, requests, 512, "most requests of one level");
ABSL_FLAG(int, requests_per_stream, 4, "a level of c streams sends min(--requests, c * this)");
ABSL_FLAG(int, min_len, 100, "shortest prompt and output");
ABSL_FLAG(int, max_len, 1024, "longest prompt and output");
ABSL_FLAG(int, max_prompt_id, 9999, "prompt token ids are uniform in [0, this]");
ABSL_FLAG(uint64_t, seed, 0, "workload seed");
ABSL_FLAG(double, timeout_s, 600, "deadline of each call");

namespace engram {
namespace {

struct Level {
  int concurrency = 0;
  int requests = 0;
  int failed = 0;
  int64_t output_tokens = 0;
  double seconds = 0;
  std::vector<double> ttft_ms, itl_ms;
};

// Request i of a level is workload request i, sampled with seed i.
Level RunLevel(EngramClient& client, const RandomRequests& requests, int concurrency) {
  Level level;
  level.concurrency = concurrency;
  level.requests = static_cast<int>(requests.prompts.size());
  std::atomic<int> next{0};
  absl::Mutex mu;
  const absl::Time start = absl::Now();
  auto stream = [&] {
    std::vector<double> ttft, itl;
    int64_t tokens = 0;
    int failed = 0;
    for (int i; (i = next.fetch_add(1)) < level.requests;) {
      const std::vector<uint32_t>& prompt = requests.prompts[i];
      v1::GenerateRequest request;
      request.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
      request.mutable_sampling()->set_temperature(0.6f);
      request.mutable_sampling()->set_seed(i);
      request.mutable_stopping()->set_max_tokens(requests.outputs[i]);
      request.mutable_stopping()->set_ignore_eos(true);
      const absl::Time sent = absl::Now();
      absl::Time last = sent;
      bool first = true;
      int64_t got = 0;
      absl::Status status = client.Generate(request, [&](const v1::GenerateResponse& m) {
        const int n = m.token_ids_size();
        if (n == 0) return true;
        const absl::Time now = absl::Now();
        if (first) {
          ttft.push_back(absl::ToDoubleMilliseconds(now - sent));
          first = false;
        } else {
          itl.push_back(absl::ToDoubleMilliseconds(now - last) / n);
        }
        last = now;
        got += n;
        return true;
      });
      if (!status.ok()) {
        if (failed++ == 0) std::fprintf(stderr, "request %d: %s\n", i, status.ToString().c_str());
        continue;
      }
      tokens += got;
    }
    absl::MutexLock lock(&mu);
    level.ttft_ms.insert(level.ttft_ms.end(), ttft.begin(), ttft.end());
    level.itl_ms.insert(level.itl_ms.end(), itl.begin(), itl.end());
    level.output_tokens += tokens;
    level.failed += failed;
  };
  std::vector<std::thread> threads;
  for (int s = 0; s < concurrency; ++s) threads.emplace_back(stream);
  for (auto& t : threads) t.join();
  level.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return level;
}

int Main() {
  std::vector<int> levels;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_concurrency), ',')) {
    int c = 0;
    if (!absl::SimpleAtoi(s, &c) || c < 1) {
      std::fprintf(stderr, "online_bench: bad --concurrency entry '%.*s'\n",
                   static_cast<int>(s.size()), s.data());
      return 2;
    }
    levels.push_back(c);
  }
  if (absl::GetFlag(FLAGS_min_len) < 1 ||
      absl::GetFlag(FLAGS_max_len) < absl::GetFlag(FLAGS_min_len)) {
    std::fprintf(stderr, "online_bench: need 1 <= --min_len <= --max_len\n");
    return 2;
  }
  EngramClientOptions options;
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.wait_for_ready = true;
  absl::StatusOr<std::unique_ptr<EngramClient>> client =
      EngramClient::Connect(absl::GetFlag(FLAGS_server), options);
  if (!client.ok()) {
    std::fprintf(stderr, "online_bench: %s\n", client.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<v1::GetModelInfoResponse> info = (*client)->GetModelInfo();
  if (!info.ok()) {
    std::fprintf(stderr, "online_bench: GetModelInfo: %s\n", info.status().ToString().c_str());
    return 1;
  }
  std::printf("server %s, model %s (vocab %u, context %u)\n", absl::GetFlag(FLAGS_server).c_str(),
              info->model().c_str(), info->vocab_size(), info->max_context());

  std::vector<Level> results;
  int failed = 0;
  for (int c : levels) {
    const int n =
        std::min(absl::GetFlag(FLAGS_requests), c * absl::GetFlag(FLAGS_requests_per_stream));
    const RandomRequests requests = DrawRandomRequests(
        absl::GetFlag(FLAGS_seed), std::max(n, 1), absl::GetFlag(FLAGS_min_len),
        absl::GetFlag(FLAGS_max_len), absl::GetFlag(FLAGS_max_prompt_id));
    Level l = RunLevel(**client, requests, c);
    failed += l.failed;
    std::printf(
        "concurrency %4d: %4d requests (%d failed) %9lld output tokens in %7.2f s = %9.1f tok/s"
        "  TTFT ms p50 %7.1f p90 %7.1f p99 %7.1f  ITL ms p50 %6.2f p90 %6.2f p99 %6.2f\n",
        c, l.requests, l.failed, static_cast<long long>(l.output_tokens), l.seconds,
        l.output_tokens / l.seconds, Percentile(l.ttft_ms, 0.5), Percentile(l.ttft_ms, 0.9),
        Percentile(l.ttft_ms, 0.99), Percentile(l.itl_ms, 0.5), Percentile(l.itl_ms, 0.9),
        Percentile(l.itl_ms, 0.99));
    results.push_back(std::move(l));
  }
  const double base = results[0].output_tokens / results[0].seconds;
  std::printf("throughput relative to concurrency %d (%.1f tok/s):\n", results[0].concurrency,
              base);
  for (const Level& l : results) {
    std::printf("  concurrency %4d  %9.1f tok/s  ratio %.3f\n", l.concurrency,
                l.output_tokens / l.seconds, l.output_tokens / l.seconds / base);
  }
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  absl::ParseCommandLine(argc, argv);
  return engram::Main();
}
