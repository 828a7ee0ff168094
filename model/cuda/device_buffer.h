// DeviceBuffer<T>: an owned array in GPU memory (cudaMalloc), freed when the buffer goes away.
// Used by the CUDA backbone for weights, caches and scratch, and by the GPU tests.
#ifndef ENGRAM_MODEL_CUDA_DEVICE_BUFFER_H_
#define ENGRAM_MODEL_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

// OK, or INTERNAL naming `what` and the CUDA error.
inline absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // `n` elements, uninitialised. RESOURCE_EXHAUSTED when the device is out of memory.
  static absl::StatusOr<DeviceBuffer> Create(size_t n) {
    DeviceBuffer b;
    if (n == 0) return b;
    const cudaError_t err = cudaMalloc(&b.data_, n * sizeof(T));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state of a failed allocation
      b.data_ = nullptr;
      return absl::ResourceExhaustedError(
          absl::StrCat("cudaMalloc of ", n * sizeof(T), " bytes: ", cudaGetErrorString(err)));
    }
    b.size_ = n;
    return b;
  }
  // A buffer holding a copy of `host`.
  static absl::StatusOr<DeviceBuffer> FromHost(absl::Span<const T> host) {
    absl::StatusOr<DeviceBuffer> b = Create(host.size());
    if (!b.ok()) return b.status();
    absl::Status st = b->Upload(host);
    if (!st.ok()) return st;
    return b;
  }

  T* get() { return data_; }
  const T* get() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

  // Synchronous copies of the first host.size() elements.
  absl::Status Upload(absl::Span<const T> host) {
    if (host.size() > size_)
      return absl::OutOfRangeError("DeviceBuffer::Upload: too many elements");
    return CudaStatus(
        cudaMemcpy(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
        "DeviceBuffer upload");
  }
  absl::StatusOr<std::vector<T>> Download() const {
    std::vector<T> host(size_);
    absl::Status st =
        CudaStatus(cudaMemcpy(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost),
                   "DeviceBuffer download");
    if (!st.ok()) return st;
    return host;
  }

  void Reset() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CUDA_DEVICE_BUFFER_H_
