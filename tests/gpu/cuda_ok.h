// CUDA_OK(call): a fatal GoogleTest assertion that a CUDA runtime call returned cudaSuccess. The
// call is evaluated once; a failure names the call and the CUDA error.
#ifndef ENGRAM_TESTS_GPU_CUDA_OK_H_
#define ENGRAM_TESTS_GPU_CUDA_OK_H_

#include <cuda_runtime.h>

#include "gtest/gtest.h"

#define CUDA_OK(expr)                                                                            \
  do {                                                                                           \
    const cudaError_t cuda_ok_error = (expr);                                                    \
    ASSERT_EQ(cuda_ok_error, cudaSuccess) << #expr << ": " << cudaGetErrorString(cuda_ok_error); \
  } while (false)

#endif  // ENGRAM_TESTS_GPU_CUDA_OK_H_
