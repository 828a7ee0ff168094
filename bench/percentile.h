// The one percentile every benchmark prints: nearest rank. The p-th percentile of n samples is the
// ceil(p n)-th smallest (1-based), so p50 of {1, 2, 3, 4} is 2 and p99 of 100 samples is the 99th;
// p = 0 gives the smallest, an empty set 0.
#ifndef ENGRAM_BENCH_PERCENTILE_H_
#define ENGRAM_BENCH_PERCENTILE_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace engram {

inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  // Less a hair, so that a product a rounding above a whole number (0.07 x 100 = 7.000000000000001)
  // does not take the next rank.
  const double rank = std::ceil(p * static_cast<double>(v.size()) - 1e-9);
  const size_t i = rank < 1 ? 0 : std::min(v.size(), static_cast<size_t>(rank)) - 1;
  return v[i];
}

}  // namespace engram

#endif  // ENGRAM_BENCH_PERCENTILE_H_
