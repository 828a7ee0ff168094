// Helpers shared by the libFuzzer targets of tests/fuzz.
//
// Several targets take two inputs (a JSON document and a text, a manifest and a file). They are
// packed into one fuzz input as PART_A '\0' PART_B: JSON, protobuf text and row-file headers
// rarely need a NUL in part A, and libFuzzer's mutations move bytes across the boundary freely.
#ifndef ENGRAM_TESTS_FUZZ_FUZZ_INPUT_H_
#define ENGRAM_TESTS_FUZZ_FUZZ_INPUT_H_

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

namespace engram::fuzz {

struct TwoParts {
  std::string_view a;
  std::string_view b;
  bool has_b = false;
};

inline TwoParts SplitAtNul(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  TwoParts p;
  const size_t nul = all.find('\0');
  if (nul == std::string_view::npos) {
    p.a = all;
  } else {
    p.a = all.substr(0, nul);
    p.b = all.substr(nul + 1);
    p.has_b = true;
  }
  return p;
}

// A scratch directory for targets whose code under test reads files; created once per process
// under $TMPDIR (scripts/fuzz.sh points it at /dev/shm: file round trips dominate those targets)
// and removed when the process exits normally (a crash leaves it for the post-mortem).
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
                        "/engram-fuzz.XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    return templ;
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)cleanup;
  return dir;
}

// Replaces the file at `path` with `bytes`; aborts on I/O errors (the harness is broken, not the
// code under test).
inline void WriteFileOrDie(const std::string& path, std::string_view bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace engram::fuzz

#endif  // ENGRAM_TESTS_FUZZ_FUZZ_INPUT_H_
