// Helpers for reading configuration: integers from JSON without silent wrap-around, and the dashed
// spelling of command-line flags.
#ifndef ENGRAM_COMMON_CONFIG_UTIL_H_
#define ENGRAM_COMMON_CONFIG_UTIL_H_

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "nlohmann/json.hpp"

namespace engram {

// Whether `v` is an integer that T holds exactly; then stores it in *out. A bare get<T>() would
// wrap 4294967298 to 2 for an int and pass validation with a value nobody wrote.
template <typename T>
bool JsonIntValue(const nlohmann::json& v, T* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return false;
    *out = static_cast<T>(u);
    return true;
  }
  if (!v.is_number_integer()) return false;
  const int64_t i = v.get<int64_t>();
  if constexpr (std::is_unsigned_v<T>) {
    if (i < 0 || static_cast<uint64_t>(i) > std::numeric_limits<T>::max()) return false;
  } else {
    if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) return false;
  }
  *out = static_cast<T>(i);
  return true;
}

// argv with every "--flag-name" (up to '=') spelled "--flag_name", as absl flags are named, so the
// documented dashed spelling works; arguments after a bare "--" are left alone.
std::vector<std::string> UnderscoreFlagNames(int argc, char** argv);

}  // namespace engram

#endif  // ENGRAM_COMMON_CONFIG_UTIL_H_
