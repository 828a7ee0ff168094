#!/bin/bash
# gpu-bundle.sh OUT_DIR FILE...
#
# Packs executables (and shared modules) built on this Debian machine into OUT_DIR together with
# every shared library they need that the GPU box (Ubuntu 24.04, CUDA 13, no package access) lacks:
# gRPC, protobuf, Abseil, RocksDB, liburing, prometheus-cpp, civetweb, ICU, PCRE2, ... Libraries the
# box has itself (glibc, libstdc++, libgcc, the CUDA driver and CUDA 13 runtime/cuBLAS) are left out.
# Libraries are stripped to keep the bundle small (it must travel in at most 64 MiB with the tree).
#
# On the GPU box run the programs through OUT_DIR/run, e.g.  OUT_DIR/run engram-worker --flags...
# (it sets LD_LIBRARY_PATH to OUT_DIR/lib and the CUDA library folder, then execs OUT_DIR/bin/NAME).
#
# Example:  scripts/gpu-bundle.sh .gpu build/tests/gpu/engram_gather_test build/bench/gather_bench
#           (.gpu is git-ignored; name it where the tree is carried; docs/benchmarks.md)
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,14p' "$0"; exit 2; }
out=$1; shift
mkdir -p "$out/bin" "$out/lib"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libnvidia|libutil\.so|libresolv\.so)'
for f in "$@"; do
  [ -f "$f" ] || { echo "gpu-bundle: no such file: $f" >&2; exit 1; }
  cp -f "$f" "$out/bin/"
  ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    [[ $name =~ $skip ]] && continue
    [ -f "$out/lib/$name" ] || { cp -L "$path" "$out/lib/$name"; strip --strip-unneeded "$out/lib/$name" 2>/dev/null || true; }
  done
done
cat > "$out/run" <<'EOF'
#!/bin/bash
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
name=$1; shift
exec "$here/bin/$name" "$@"
EOF
chmod +x "$out/run"
du -sh "$out" | awk '{print "gpu-bundle: " $1 " in " $2}'
