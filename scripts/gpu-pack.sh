#!/usr/bin/env bash
# Packs what a GPU run needs into .gpu/ (keep it out of git: .git/info/exclude): every test binary
# carrying the ctest label `gpu`, the benchmarks and servers, stripped, with the shared libraries
# they need that a GPU machine without this project's Debian packages lacks (gRPC, protobuf,
# Abseil, RocksDB, liburing, ICU, PCRE2, ...; glibc, libstdc++ and the CUDA runtime and cuBLAS are
# the machine's own). On the GPU machine, `bash scripts/gpu-run.sh` runs them (docs/benchmarks.md).
#
#   bash scripts/gpu-pack.sh [BUILD_DIR]     (default build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
out=$root/.gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
# The gpu-labelled tests, from ctest itself: no hand-kept list.
ctest --test-dir "$build" -L gpu -N | sed -n 's/^ *Test *#[0-9]*: *//p' > "$out/gpu-tests.txt"
bins=()
while read -r t; do bins+=("$(find "$build/tests" -type f -name "$t" -perm -u+x | head -n 1)"); done \
  < "$out/gpu-tests.txt"
for b in server/engram-worker memory_tier/engram-memory client/engram bench/throughput_bench \
         bench/online_bench bench/gather_bench bench/memory_tier_bench; do
  [ -f "$build/$b" ] && bins+=("$build/$b")
done
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libnvidia|libutil\.so|libresolv\.so)'
for f in "${bins[@]}"; do
  strip --strip-debug -o "$out/bin/$(basename "$f")" "$f"
  ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    [[ $name =~ $skip ]] && continue
    [ -f "$out/lib/$name" ] || { cp -L "$path" "$out/lib/$name"; strip --strip-unneeded "$out/lib/$name" 2>/dev/null || true; }
  done
done
# The GPT-2 and cl100k tokenizer.json files (scripts/fetch-testdata.sh): the demo model's tokenizer
# and what tests/vectors/generate.py reads.
for name in tokenizer-gpt2 tokenizer-gpt4; do
  mkdir -p "$out/testdata/$name/package/models"
  cp "$root/.cache/testdata/$name/package/models/tokenizer.json" "$out/testdata/$name/package/models/"
done
cat > "$out/run" <<'RUN'
#!/bin/bash
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
name=$1; shift
exec "$here/bin/$name" "$@"
RUN
chmod +x "$out/run"
du -sh "$out" | awk '{print "gpu-pack: " $1 " in .gpu"}'
