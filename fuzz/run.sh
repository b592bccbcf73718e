#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (WPACK_FUZZ=ON: ASan + UBSan + coverage, CUDA off) in
# their own build folder and runs each over its seed corpus for a bounded time.
#
#   fuzz/run.sh                  every target, FUZZ_SECONDS each (about a minute in all)
#   fuzz/run.sh rans tile        only these targets
#   fuzz/run.sh --make-corpus    rewrite the seeds fuzz/corpus/<target>/seed-* (crash-* files stay)
#   fuzz/run.sh --build-only     build, run nothing
#
# Environment: FUZZ_SECONDS (per target, default 7), FUZZ_BUILD (default build-fuzz), FUZZ_JOBS
# (build jobs, default: all cores), CC/CXX (default clang/clang++).
#
# The checked-in corpus is only read; new inputs go to $FUZZ_BUILD/found/<target>/. A crash ends
# that target's run (the others still run; the exit status is 1) and leaves the input in
# $FUZZ_BUILD/artifacts/<target>/; to keep it, copy it to fuzz/corpus/<target>/crash-<what>, fix
# the library, and add a test to tests/test_fuzz_regressions.cpp (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-7}
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
read -ra ALL_TARGETS <<<"$(sed -n 's/^set(WPACK_FUZZ_SURFACES \(.*\))$/\1/p' fuzz/CMakeLists.txt)"

make_corpus=0
build_only=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --make-corpus) make_corpus=1 ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *)
      if [[ " ${ALL_TARGETS[*]} " != *" $arg "* ]]; then
        echo "fuzz/run.sh: unknown target '$arg' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
      fi
      targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

for tool in "${CC:-clang}" "${CXX:-clang++}"; do
  command -v "$tool" >/dev/null || { echo "fuzz/run.sh: $tool not found (Debian: apt-get install clang libclang-rt-14-dev libomp-dev)" >&2; exit 1; }
done

build_start=$SECONDS
mkdir -p "$BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="${CC:-clang}" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
  -DWPACK_FUZZ=ON -DWPACK_CUDA=OFF -DWPACK_BUILD_TESTS=OFF -DWPACK_BUILD_BENCH=OFF >"$BUILD/configure.log" 2>&1 ||
  { cat "$BUILD/configure.log"; exit 1; }
build_targets=()
for t in "${targets[@]}"; do build_targets+=(--target "fuzz_$t"); done
[ $make_corpus = 1 ] && build_targets+=(--target wpack_fuzz_make_corpus)
cmake --build "$BUILD" -j "$JOBS" "${build_targets[@]}"
echo "fuzz: built in $((SECONDS - build_start)) s"

# Sanitizers: stop at the first report, symbolized when llvm-symbolizer is there.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if [ $make_corpus = 1 ]; then
  "$BUILD/fuzz/wpack_fuzz_make_corpus" fuzz/corpus
  exit 0
fi
[ $build_only = 1 ] && exit 0

status=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  found="$BUILD/found/$t"
  artifacts="$BUILD/artifacts/$t/"
  log="$BUILD/fuzz-$t.log"
  mkdir -p "$found" "$artifacts"
  [ -d "$corpus" ] || { echo "fuzz/run.sh: no seed corpus $corpus" >&2; exit 1; }
  start=$SECONDS
  # -rss_limit_mb also caps single allocations (malloc_limit_mb defaults to it): a harness never
  # asks for more than a few MiB, so a larger request is a bug the input provoked.
  if "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -max_len=16384 \
       -print_final_stats=1 -artifact_prefix="$artifacts" "$found" "$corpus" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    printf 'fuzz: %-12s ok   %4d s  %8s runs  coverage %s\n' "$t" $((SECONDS - start)) "${runs:-?}" "${cov:-?}"
  else
    status=1
    printf 'fuzz: %-12s FAILED after %d s; last lines of %s:\n' "$t" $((SECONDS - start)) "$log"
    tail -60 "$log"
    echo "fuzz: reproduce with: $BUILD/fuzz/fuzz_$t $artifacts<crash file>"
  fi
done
exit $status
