// --help for the two servers. absl's own --help lists only the flags defined in <program>.cc or
// <program>_main.cc and exits 1; engram-worker's flags live in server/worker_config.cc and
// engram-memory's in memory_tier/main.cc, so both said "No flags matched". The servers answer
// --help themselves: the usage line and every flag of the file that defines them, on stdout, exit
// 0.
// --helpfull and --help=SUBSTRING stay absl's.
#ifndef ENGRAM_COMMON_FLAGS_HELP_H_
#define ENGRAM_COMMON_FLAGS_HELP_H_

#include <string>

#include "absl/strings/string_view.h"

namespace engram {

// Whether the command line asks for help: --help, -help, --helpshort, -helpshort or -h, before
// any bare "--".
bool HelpRequested(int argc, char** argv);

// `usage`, then every absl flag defined in `flag_file` (pass __FILE__ from the file with the
// ABSL_FLAG definitions), sorted by name and spelled with dashes, each with its help text and its
// default when it has one.
std::string FlagsHelp(absl::string_view usage, absl::string_view flag_file);

}  // namespace engram

#endif  // ENGRAM_COMMON_FLAGS_HELP_H_
