// The random workload of the throughput benchmarks, shaped like nano-vLLM's bench.py
// (docs/benchmarks.md). throughput_bench (offline) and online_bench (through gRPC) both draw it
// here, so their figures are of the very same requests.
//
// Per request, from one std::mt19937_64(seed): its prompt length U(min_len, max_len), then its
// prompt ids uniform in [0, max_id], then its output length U(min_len, max_len).
#ifndef ENGRAM_BENCH_RANDOM_REQUESTS_H_
#define ENGRAM_BENCH_RANDOM_REQUESTS_H_

#include <cstdint>
#include <random>
#include <vector>

namespace engram {

struct RandomRequests {
  std::vector<std::vector<uint32_t>> prompts;
  std::vector<int> outputs;  // output tokens of each request
};

inline RandomRequests DrawRandomRequests(uint64_t seed, int n, int min_len, int max_len,
                                         uint32_t max_id) {
  RandomRequests r;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(min_len, max_len);
  std::uniform_int_distribution<uint32_t> id(0, max_id);
  for (int i = 0; i < n; ++i) {
    std::vector<uint32_t> p(len(rng));
    for (auto& t : p) t = id(rng);
    r.prompts.push_back(std::move(p));
    r.outputs.push_back(len(rng));
  }
  return r;
}

}  // namespace engram

#endif  // ENGRAM_BENCH_RANDOM_REQUESTS_H_
