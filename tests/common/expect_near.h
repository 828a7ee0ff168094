// Element-wise comparison of a float result with a float64 reference, with a tolerance of the form
// atol + rtol * |reference| (docs/architecture.md pattern 3); a NaN never passes, and a failure
// names the first mismatches.
#ifndef ENGRAM_TESTS_COMMON_EXPECT_NEAR_H_
#define ENGRAM_TESTS_COMMON_EXPECT_NEAR_H_

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace engram::testing {

inline void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, double atol,
                       double rtol) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool close = std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]);
    if (!close && ++bad <= 5) {
      ADD_FAILURE() << "element " << i << ": got " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << "mismatches";
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_EXPECT_NEAR_H_
