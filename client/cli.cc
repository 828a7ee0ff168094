#include "client/cli.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace engram::cli {
namespace {

std::map<std::string, Command>& Registry() {
  static auto* registry = new std::map<std::string, Command>();
  return *registry;
}

}  // namespace

bool RegisterCommand(Command command) {
  Registry()[command.name] = std::move(command);
  return true;
}

const std::map<std::string, Command>& Commands() { return Registry(); }

absl::StatusOr<Args> Args::Parse(int argc, char** argv, std::vector<std::string> value_flags,
                                 std::vector<std::string> bool_flags) {
  Args args;
  auto is_in = [](const std::vector<std::string>& v, absl::string_view s) {
    for (const auto& x : v) {
      if (x == s) return true;
    }
    return false;
  };
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) args.positional_.emplace_back(argv[i]);
      break;
    }
    if (arg.size() > 2 && arg.substr(0, 2) == "--") {
      absl::string_view body = arg.substr(2);
      std::string name(body.substr(0, body.find('=')));
      if (is_in(bool_flags, name)) {
        if (body.find('=') != absl::string_view::npos) {
          std::string v(body.substr(body.find('=') + 1));
          if (v != "true" && v != "false") {
            return absl::InvalidArgumentError(absl::StrCat("--", name, " takes true or false"));
          }
          if (v == "true") args.values_[name] = "true";
          continue;
        }
        args.values_[name] = "true";
        continue;
      }
      if (!is_in(value_flags, name)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
      }
      if (body.find('=') != absl::string_view::npos) {
        args.values_[name] = std::string(body.substr(body.find('=') + 1));
      } else {
        if (i + 1 >= argc)
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        args.values_[name] = argv[++i];
      }
      continue;
    }
    args.positional_.emplace_back(arg);
  }
  return args;
}

bool Args::Has(absl::string_view flag) const { return values_.find(flag) != values_.end(); }

std::optional<std::string> Args::Get(absl::string_view flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::GetOr(absl::string_view flag, std::string fallback) const {
  auto v = Get(flag);
  return v ? *v : fallback;
}

absl::StatusOr<std::string> Args::Require(absl::string_view flag) const {
  auto v = Get(flag);
  if (!v) return absl::InvalidArgumentError(absl::StrCat("missing --", flag));
  return *v;
}

absl::StatusOr<int64_t> Args::GetInt(absl::string_view flag, int64_t fallback, int64_t min,
                                     int64_t max) const {
  auto v = Get(flag);
  if (!v) return fallback;
  int64_t out;
  if (!absl::SimpleAtoi(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be an integer, got \"", *v, "\""));
  }
  if (out < min || out > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be in [", min, ", ", max, "], got ", out));
  }
  return out;
}

absl::StatusOr<double> Args::GetDouble(absl::string_view flag, double fallback) const {
  auto v = Get(flag);
  if (!v) return fallback;
  double out;
  if (!absl::SimpleAtod(*v, &out) || !std::isfinite(out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be a finite number, got \"", *v, "\""));
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> ParseTokenIds(absl::string_view text,
                                                    absl::string_view flag) {
  std::vector<uint32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    uint32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": \"", piece, "\" is not a token id (expected e.g. 1,2,3)"));
    }
    ids.push_back(id);
  }
  return ids;
}

int Fail(absl::string_view command, const absl::Status& status, int code) {
  const std::string message = absl::StrReplaceAll(status.message(), {{"\n", " "}});
  std::fprintf(stderr, "engram %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               message.c_str());
  return code;
}

}  // namespace engram::cli
