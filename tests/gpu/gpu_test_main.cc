// main() for GPU tests: exits 77 (ctest SKIP_RETURN_CODE) when no CUDA device is usable, so
// `ctest` reports the test as skipped on CPU-only machines instead of passing or failing it.
#include <cuda_runtime.h>

#include <cstdio>

#include "gtest/gtest.h"

int main(int argc, char** argv) {
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("no CUDA device (%s): skipping GPU tests\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
