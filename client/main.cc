// engram: the command line of engram-serve. Subcommands live in cmd_*.cc and register in cli.h.
#include <cstdio>
#include <cstring>

#include "client/cli.h"

namespace {

void PrintUsage() {
  std::fprintf(stderr, "usage: engram <command> [flags]\n\ncommands:\n");
  for (const auto& [name, command] : engram::cli::Commands()) {
    std::fprintf(stderr, "  %-14s %s\n", name.c_str(), command.summary.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "help") == 0 || std::strcmp(argv[1], "--help") == 0) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  const auto& commands = engram::cli::Commands();
  auto it = commands.find(argv[1]);
  if (it == commands.end()) {
    std::fprintf(stderr, "engram: unknown command \"%s\"\n", argv[1]);
    PrintUsage();
    return 2;
  }
  return it->second.run(argc - 1, argv + 1);
}
