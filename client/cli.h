// The `engram` command line: subcommands register themselves here, one file per group
// (cmd_tokenize.cc, cmd_hash.cc, cmd_table.cc, ...), and main.cc dispatches on the first word.
#ifndef ENGRAM_CLIENT_CLI_H_
#define ENGRAM_CLIENT_CLI_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace engram::cli {

// argv[0] is the subcommand name; returns the process exit code.
using CommandFn = int (*)(int argc, char** argv);

struct Command {
  std::string name;     // e.g. "tokenize", "table"
  std::string summary;  // one line for `engram help`
  CommandFn run;
};

// Registers a command at static-initialisation time; returns true.
bool RegisterCommand(Command command);
const std::map<std::string, Command>& Commands();

// Parsed "--flag value", "--flag=value", "--switch" and positional arguments.
// Every flag must be declared; an unknown one is an error naming it.
class Args {
 public:
  // `value_flags` take a value; `bool_flags` do not.
  static absl::StatusOr<Args> Parse(int argc, char** argv, std::vector<std::string> value_flags,
                                    std::vector<std::string> bool_flags = {});

  bool Has(absl::string_view flag) const;
  std::optional<std::string> Get(absl::string_view flag) const;
  std::string GetOr(absl::string_view flag, std::string fallback) const;
  // INVALID_ARGUMENT "missing --flag" when absent.
  absl::StatusOr<std::string> Require(absl::string_view flag) const;
  // Integer flag with range check.
  absl::StatusOr<int64_t> GetInt(absl::string_view flag, int64_t fallback, int64_t min,
                                 int64_t max) const;
  // A finite number (nan and inf are refused).
  absl::StatusOr<double> GetDouble(absl::string_view flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string, std::less<>> values_;
  std::vector<std::string> positional_;
};

// Token ids written as "1,2,3" (the value of --`flag`); INVALID_ARGUMENT naming the piece that is
// not an id in [0, 2^32).
absl::StatusOr<std::vector<uint32_t>> ParseTokenIds(absl::string_view text, absl::string_view flag);

// Prints "engram <command>: <message>" to stderr as one line and returns `code` (for
// `return Fail(...)`).
int Fail(absl::string_view command, const absl::Status& status, int code = 1);

}  // namespace engram::cli

#define ENGRAM_CLI_COMMAND(id, name, summary, fn) \
  static const bool engram_cli_registered_##id = ::engram::cli::RegisterCommand({name, summary, fn})

#endif  // ENGRAM_CLIENT_CLI_H_
