#include "model/cuda/gemm.h"

#include "absl/strings/str_cat.h"
#include "model/kernels/gemv.cuh"

namespace engram {
namespace {

absl::Status LtStatus(cublasStatus_t st, absl::string_view what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  // cublasGetStatusName lives in libcublas, which the backbone does not otherwise need.
  return absl::InternalError(
      absl::StrCat("cuBLASLt ", what, ": cublasStatus_t ", static_cast<int>(st)));
}

#define LT_RETURN_IF_ERROR(expr, what)                 \
  do {                                                 \
    absl::Status lt_status = LtStatus((expr), (what)); \
    if (!lt_status.ok()) return lt_status;             \
  } while (false)

}  // namespace

// Row-major out[T, N] = x[T, K] w[N, K]^T is, in cuBLAS's column-major terms, out^T[N, T] =
// w[N, K] x^T[K, T] with w seen as a column-major K x N matrix (transposed) and x as a
// column-major K x T one.
struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(bool gemv, size_t workspace_bytes) {
  std::unique_ptr<Gemm> g(new Gemm());
  g->gemv_ = gemv;
  LT_RETURN_IF_ERROR(cublasLtCreate(&g->handle_), "create");
  absl::StatusOr<DeviceBuffer<uint8_t>> ws = DeviceBuffer<uint8_t>::Create(workspace_bytes);
  if (!ws.ok()) return ws.status();
  g->workspace_ = *std::move(ws);
  return g;
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<const Gemm::Plan*> Gemm::PlanFor(int T, int N, int K) {
  auto key = std::make_tuple(T, N, K);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                     "matmul desc");
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                    sizeof(trans_a)),
                     "transa");
  LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                    sizeof(trans_b)),
                     "transb");
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, K, N, K), "layout a");
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, K, T, K), "layout b");
  LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32F, N, T, N), "layout c");
  cublasLtMatmulPreference_t pref = nullptr;
  LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const size_t ws = workspace_.bytes();
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  LT_RETURN_IF_ERROR(st, absl::StrCat("heuristic for T=", T, " N=", N, " K=", K));
  if (found == 0) {
    return absl::InternalError(
        absl::StrCat("cuBLASLt has no algorithm for T=", T, " N=", N, " K=", K));
  }
  plan->algo = result.algo;
  const Plan* p = plan.get();
  plans_.emplace(key, std::move(plan));
  return p;
}

absl::Status Gemm::Run(const __nv_bfloat16* x, const __nv_bfloat16* w, int T, int N, int K,
                       float* out, cudaStream_t stream) {
  if (T == 0) return absl::OkStatus();
  if (gemv_ && kernels::GemvSupports(x, w, T, K)) {
    return kernels::LaunchGemv(x, w, T, N, K, out, stream);
  }
  absl::StatusOr<const Plan*> plan = PlanFor(T, N, K);
  if (!plan.ok()) return plan.status();
  const float alpha = 1.0f, beta = 0.0f;
  LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, (*plan)->op, &alpha, w, (*plan)->a, x, (*plan)->b,
                                    &beta, out, (*plan)->c, out, (*plan)->c, &(*plan)->algo,
                                    workspace_.get(), workspace_.bytes(), stream),
                     absl::StrCat("matmul T=", T, " N=", N, " K=", K));
  return absl::OkStatus();
}

}  // namespace engram
