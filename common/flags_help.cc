#include "common/flags_help.h"

#include <map>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace engram {
namespace {

// absl reports a flag's file as its __FILE__ with leading slashes removed; compare the same way.
absl::string_view WithoutLeadingSlashes(absl::string_view path) {
  while (!path.empty() && (path.front() == '/' || path.front() == '\\')) path.remove_prefix(1);
  return path;
}

}  // namespace

bool HelpRequested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view a = argv[i];
    if (a == "--") break;
    if (a == "--help" || a == "-help" || a == "--helpshort" || a == "-helpshort" || a == "-h") {
      return true;
    }
  }
  return false;
}

std::string FlagsHelp(absl::string_view usage, absl::string_view flag_file) {
  const absl::string_view file = WithoutLeadingSlashes(flag_file);
  std::map<std::string, const absl::CommandLineFlag*> flags;  // sorted by name
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (WithoutLeadingSlashes(flag->Filename()) == file) flags[std::string(name)] = flag;
  }
  std::string out = absl::StrCat("Usage: ", usage, "\n\nFlags (dashes or underscores):\n");
  for (const auto& [name, flag] : flags) {
    absl::StrAppend(&out, "  --", absl::StrReplaceAll(name, {{"_", "-"}}), "\n      ",
                    flag->Help());
    const std::string def = flag->DefaultValue();
    if (!def.empty()) absl::StrAppend(&out, " (default: ", def, ")");
    absl::StrAppend(&out, "\n");
  }
  return out;
}

}  // namespace engram
