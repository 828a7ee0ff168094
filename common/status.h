// Status helpers shared by every part of engram-serve.
//
// absl::Status / absl::StatusOr<T> is the one error type (docs/architecture.md pattern 6). The
// pinned Abseil (20220623) has no ABSL_RETURN_IF_ERROR, so these two macros stand in until it does.
#ifndef ENGRAM_COMMON_STATUS_H_
#define ENGRAM_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ENGRAM_STATUS_CONCAT_INNER_(a, b) a##b
#define ENGRAM_STATUS_CONCAT_(a, b) ENGRAM_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function with the error if `expr` is not OK.
//   ENGRAM_RETURN_IF_ERROR(file.Open(path));
#define ENGRAM_RETURN_IF_ERROR(expr)                        \
  do {                                                      \
    ::absl::Status engram_status_ = (expr);                 \
    if (!engram_status_.ok()) return engram_status_;        \
  } while (0)

// Evaluates a StatusOr expression; on error returns it, otherwise moves the value into `lhs`.
//   ENGRAM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
#define ENGRAM_ASSIGN_OR_RETURN(lhs, expr) \
  ENGRAM_ASSIGN_OR_RETURN_IMPL_(ENGRAM_STATUS_CONCAT_(engram_statusor_, __LINE__), lhs, expr)

#define ENGRAM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace engram {

// Prefixes an error message with context, keeping the code: "loading model: <original>".
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace engram

#endif  // ENGRAM_COMMON_STATUS_H_
