// A self-cleaning temporary directory for tests.
#ifndef ENGRAM_TESTS_COMMON_TEMP_DIR_H_
#define ENGRAM_TESTS_COMMON_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace engram::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
// path() is empty when the directory could not be made.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/engram-test-XXXXXX";
    const char* made = mkdtemp(tmpl.data());
    if (made != nullptr) path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_TEMP_DIR_H_
