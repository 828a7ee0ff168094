// Typed access to tokenizer.json fields for the tokenizer parsers. Every error names where in the
// file the problem is ("model.vocab", "pre_tokenizer.pretokenizers[1].pattern", ...), and nothing
// throws: fields are type-checked before nlohmann::json converts them.
#ifndef ENGRAM_MODEL_TOKENIZER_JSON_H_
#define ENGRAM_MODEL_TOKENIZER_JSON_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace engram::tokenizer_internal {

inline absl::Status JsonError(absl::string_view where, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json ", where, ": ", problem));
}

// The field `key` of `object`, or nullptr when absent or null.
inline const nlohmann::json* JsonField(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// Optional bool; `fallback` when absent or null.
inline absl::StatusOr<bool> JsonBool(const nlohmann::json& object, const char* key,
                                     absl::string_view where, bool fallback) {
  const nlohmann::json* f = JsonField(object, key);
  if (f == nullptr) return fallback;
  if (!f->is_boolean()) return JsonError(absl::StrCat(where, ".", key), "must be true or false");
  return f->get<bool>();
}

// Optional string; nullopt when absent or null.
inline absl::StatusOr<std::optional<std::string>> JsonOptionalString(const nlohmann::json& object,
                                                                     const char* key,
                                                                     absl::string_view where) {
  const nlohmann::json* f = JsonField(object, key);
  if (f == nullptr) return std::optional<std::string>();
  if (!f->is_string()) return JsonError(absl::StrCat(where, ".", key), "must be a string");
  return std::optional<std::string>(f->get<std::string>());
}

inline absl::StatusOr<std::string> JsonString(const nlohmann::json& object, const char* key,
                                              absl::string_view where) {
  const nlohmann::json* f = JsonField(object, key);
  if (f == nullptr) return JsonError(absl::StrCat(where, ".", key), "missing");
  if (!f->is_string()) return JsonError(absl::StrCat(where, ".", key), "must be a string");
  return f->get<std::string>();
}

// A token id: an integer in [0, 2^31).
inline absl::StatusOr<uint32_t> JsonId(const nlohmann::json& value, absl::string_view where) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() >= (int64_t{1} << 31)) {
    return JsonError(where, "must be a token id (an integer in [0, 2^31))");
  }
  return static_cast<uint32_t>(value.get<int64_t>());
}

// The "type" tag of a component object.
inline absl::StatusOr<std::string> JsonType(const nlohmann::json& component,
                                            absl::string_view where) {
  if (!component.is_object()) return JsonError(where, "must be an object");
  return JsonString(component, "type", where);
}

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_JSON_H_
