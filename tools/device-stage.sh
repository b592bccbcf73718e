#!/bin/bash
# Here, before a device run: packs the GPU test and bench binaries of an up-to-date local CUDA
# build (default ./build) into .devbin/ (git-ignored, ~15 MB), so that tools/device-check.sh
# runs them on the GPU machine instead of configuring and building there (~90 s of device time).
# The binaries name the source and build folders by absolute path (test data, the wpack binary):
# device-check.sh links the same path to the tree there. Carry [".devdeps", ".devbin"].
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
build=$(realpath "${1:-build}")
grep -q '^WPACK_CUDA:STRING=ON' "$build/CMakeCache.txt" || { echo "$build: not a WPACK_CUDA=ON build" >&2; exit 1; }
# the binaries device-check.sh runs; their cmake targets are their file names
bins="cli/wpack tests/gpu_tile_decode tests/gpu_verify tests/test_gpu_host
      bench/bench_gpu_layers bench/bench_bulk_copy bench/bench_read_floor"
cmake --build "$build" -j"$(nproc)" --target $(for f in $bins; do basename "$f"; done) > /dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for f in $bins; do
  mkdir -p "$stage/$(dirname "$f")"
  strip -o "$stage/$f" "$build/$f"
done
# STAGE_EXTRA: more binaries (paths here), staged under extra/ by file name, e.g. the bench
# binary of another commit for an A/B in one run (device-check.sh BENCH_BINS)
for f in ${STAGE_EXTRA:-}; do
  mkdir -p "$stage/extra"
  strip -o "$stage/extra/$(basename "$f")" "$f"
done
# libraries the GPU machine may lack (its xxhash is a static archive in .devdeps)
mkdir -p "$stage/lib"
cp -L "$(ldconfig -p | awk '/libxxhash.so.0 /{print $NF; exit}')" "$stage/lib/libxxhash.so.0"
rm -rf .devbin && mkdir .devbin
tar -C "$stage" -cf - . | xz -6 -T"$(nproc)" > .devbin/bins.tar.xz
printf '%s\n%s\n%s\n' "$root" "$build" "$(git describe --always --dirty)" > .devbin/paths
echo "staged $(git describe --always --dirty): $(du -h .devbin/bins.tar.xz | cut -f1)"
