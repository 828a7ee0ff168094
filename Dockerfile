# engram-serve container image: one image with engram-worker, engram-memory and the engram CLI.
#
# Stage 1 builds on Debian bookworm with the same packages as scripts/install-deps.sh (CUDA parts
# build when the base image carries nvcc at /usr/local/cuda; pass --build-arg BUILDER=<a bookworm
# image with CUDA 13> for that). Stage 2 carries only the binaries and the shared libraries they load.
#
#   podman build -t engram-serve:0.1.0 .        (or docker build)
#
# Bases: pin them by digest where you build, e.g.
#   podman build --build-arg BASE=docker.io/library/debian:bookworm-slim@sha256:<digest> ...
# (`podman pull debian:bookworm-slim && podman image inspect --format '{{.Digest}}' ...` gives
# the digest). Without registry access, make the base locally (docs/operations.md) and pass its
# image id, which pins it just as well:
#   debootstrap --variant=minbase bookworm /tmp/rootfs http://deb.debian.org/debian
#   tar -C /tmp/rootfs -c . | podman import - localhost/debian:bookworm
#   podman build --build-arg BASE=$(podman image inspect --format '{{.Id}}' localhost/debian:bookworm) ...
# The runtime stage runs a smoke test that fails the build when a library is missing or a binary
# does not start. The image runs as the numeric user 10001 (Kubernetes runAsNonRoot).
ARG BASE=debian:bookworm
ARG BUILDER=${BASE}
ARG RUNTIME=${BASE}

FROM ${BUILDER} AS build
# The git revision engram_build_info reports (the build context has no .git):
#   --build-arg REVISION=$(git rev-parse --short=12 HEAD)
ARG REVISION=unknown
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      librocksdb-dev liburing-dev prometheus-cpp-dev libicu-dev libpcre2-dev \
      nlohmann-json3-dev libcpp-httplib-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY common common
COPY model model
COPY memory_tier memory_tier
COPY server server
COPY client client
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
         -DENGRAM_BUILD_TESTS=OFF -DENGRAM_BUILD_BENCH=OFF -DENGRAM_GIT_REVISION="${REVISION}" \
    && cmake --build build -j"$(nproc)" --target engram engram-memory engram-worker \
    && mkdir -p /out/bin /out/lib \
    && cp build/client/engram build/memory_tier/engram-memory build/server/engram-worker /out/bin/ \
    && for b in /out/bin/*; do \
         ldd "$b" | awk '/=> \//{print $3}' | grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux)[.-]' \
           | xargs -r -I{} cp -Ln {} /out/lib/; \
       done

FROM ${RUNTIME}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/engram engram
COPY --from=build /out/lib/ /usr/local/lib/engram/
COPY --from=build /out/bin/ /usr/local/bin/
# Smoke test, without pipes that could hide a failure: every library resolves and every binary
# starts (absl's --version exits 0 only after the dynamic loader has loaded everything).
RUN set -eu; \
    echo /usr/local/lib/engram > /etc/ld.so.conf.d/engram.conf; ldconfig; \
    for b in /usr/local/bin/engram /usr/local/bin/engram-memory /usr/local/bin/engram-worker; do \
      missing=$(ldd "$b" | grep "not found" || true); \
      if [ -n "$missing" ]; then echo "$b: missing libraries: $missing" >&2; exit 1; fi; \
    done; \
    engram help >/dev/null; \
    engram-memory --version >/dev/null; \
    engram-worker --version >/dev/null; \
    mkdir -p /var/lib/engram && chown 10001:10001 /var/lib/engram
USER 10001:10001
EXPOSE 50051 50052 8000 9400 9092
ENTRYPOINT []
CMD ["/usr/local/bin/engram-worker", "--help"]
