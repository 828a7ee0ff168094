// ToDevice: a host vector copied to the device. ExpectNearDevice: compares a device array (f32 or bf16) with a float64 CPU reference element by
// element, with a tolerance atol + rtol * |reference|; prints the first mismatches with their index
// and fails on any NaN. The tolerance is chosen per precision by each test and justified there.
#ifndef ENGRAM_TESTS_GPU_DEVICE_EXPECT_NEAR_H_
#define ENGRAM_TESTS_GPU_DEVICE_EXPECT_NEAR_H_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/cuda/device_buffer.h"
#include "tests/gpu/cuda_ok.h"

namespace engram::testing {

inline float ToFloat(float v) { return v; }
inline float ToFloat(__nv_bfloat16 v) {
  uint16_t bits;
  std::memcpy(&bits, &v, 2);
  const uint32_t f = uint32_t{bits} << 16;
  float out;
  std::memcpy(&out, &f, 4);
  return out;
}

// A device copy of `host` (an empty buffer, whose pointer is null, for an empty vector); a failed
// allocation or copy fails the test.
template <typename T>
DeviceBuffer<T> ToDevice(const std::vector<T>& host) {
  if (host.empty()) return DeviceBuffer<T>();  // null, like an empty tensor
  absl::StatusOr<DeviceBuffer<T>> b = DeviceBuffer<T>::FromHost(host);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : DeviceBuffer<T>();
}

// Host copy of n device elements as floats.
template <typename T>
std::vector<float> DownloadAsFloat(const T* device, size_t n) {
  std::vector<T> raw(n);
  const cudaError_t err = cudaMemcpy(raw.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost);
  EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = ToFloat(raw[i]);
  return out;
}

template <typename T>
void ExpectNearDevice(const T* device, const std::vector<double>& want, double atol, double rtol,
                      const std::string& what = "") {
  const std::vector<float> got = DownloadAsFloat(device, want.size());
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    const bool close = err <= atol + rtol * std::fabs(want[i]);  // false for NaN
    if (!close) {
      if (++bad <= 8) {
        ADD_FAILURE() << what << " element " << i << ": got " << got[i] << ", want " << want[i]
                      << " (|err| " << err << " > " << atol + rtol * std::fabs(want[i]) << ")";
      }
    } else if (err > worst) {
      worst = err;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << want.size() << " elements mismatch";
  ::testing::Test::RecordProperty(what.empty() ? "max_abs_err" : what + "_max_abs_err", std::to_string(worst));
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_GPU_DEVICE_EXPECT_NEAR_H_
