// Structured logging: one logfmt line per event on stderr, e.g.
//   ts=2026-11-23T03:30:00.123Z level=info src=server/main.cc:42 msg="serving" addr=127.0.0.1:50051
//
// Usage:
//   ENGRAM_LOG(INFO) << "serving";
//   ENGRAM_LOG(WARNING).With("addr", addr).With("rows", n) << "slow lookup";
// The level threshold comes from ENGRAM_LOG_LEVEL (debug|info|warning|error; default info) or
// SetLogLevel(). Lines are written with one write() so concurrent threads do not interleave.
#ifndef ENGRAM_COMMON_LOG_H_
#define ENGRAM_COMMON_LOG_H_

#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace engram {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warning" or "error"; returns false on anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// Collects one log line and writes it when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  // Adds key=value; the value is quoted when it contains spaces, quotes or '='.
  template <typename T>
  LogLine& With(absl::string_view key, const T& value) {
    AppendField(key, absl::StrCat(value));
    return *this;
  }
  LogLine& With(absl::string_view key, absl::string_view value) {
    AppendField(key, value);
    return *this;
  }
  template <typename T>
  LogLine& operator<<(const T& value) {
    message_ << value;
    return *this;
  }

 private:
  void AppendField(absl::string_view key, absl::string_view value);

  LogLevel level_;
  const char* file_;
  int line_;
  std::ostringstream message_;
  std::string fields_;
};

// Quotes a logfmt value when needed.
std::string LogfmtValue(absl::string_view value);

}  // namespace engram

#define ENGRAM_LOG_LEVEL_DEBUG ::engram::LogLevel::kDebug
#define ENGRAM_LOG_LEVEL_INFO ::engram::LogLevel::kInfo
#define ENGRAM_LOG_LEVEL_WARNING ::engram::LogLevel::kWarning
#define ENGRAM_LOG_LEVEL_ERROR ::engram::LogLevel::kError

#define ENGRAM_LOG(severity)                                                         \
  if (ENGRAM_LOG_LEVEL_##severity < ::engram::GetLogLevel()) {                       \
  } else                                                                             \
    ::engram::LogLine(ENGRAM_LOG_LEVEL_##severity, __FILE__, __LINE__)

#endif  // ENGRAM_COMMON_LOG_H_
