#!/bin/bash
# One run on the lent GPU machine (../shared/device/README.md): configure and build the working
# tree, run the GPU tests, then bench_gpu_layers with this script's arguments, each step under its
# own time limit so that a hang cannot spend the session's device time. Logs go to $OUT/logs.tgz
# (logs-$TAG.tgz with TAG set; one file: the device tool returns only a few), a short summary is printed last.
#
#   device tool, carry [".devdeps"]:
#     bash tools/device-check.sh --shapes 8192x8192,28672x8192 --schemes int4,int8 --batch 1,16
#
# With .devbin/ (tools/device-stage.sh, run here; carry [".devdeps", ".devbin"]) the binaries built
# here run there: no configure or build on the GPU machine; if they cannot start there, it builds.
#
# Environment: BUILD (default /tmp/wpack-dev), TESTS (a ctest -R regex, or with .devbin a Catch2
# test spec; default all GPU tests, "none" skips them), TEST_ENVS (as BENCH_ENVS: the GPU tests
# once per set), BENCH_ENVS (space-separated VAR=VALUE sets, one bench run each, e.g.
# "X=0 X=1 X=0": A/B of an environment switch, alternating), BENCH_BINS (bench binaries relative
# to the build folder, each run per set; default bench/bench_gpu_layers; e.g. with .devbin
# "bench/bench_gpu_layers extra/bench_old": an A/B of two commits), STEP_LIMIT (seconds, default 240).
set -u
BUILD=${BUILD:-/tmp/wpack-dev}
LIMIT=${STEP_LIMIT:-240}
LOGS=$(mktemp -d)
T0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }
finish() { (cd "$LOGS" && tar czf "${OUT:-/tmp}/logs${TAG:+-$TAG}.tgz" .); }
trap finish EXIT

[ -f .devdeps/env.sh ] && source .devdeps/env.sh
prebuilt=0
if [ -f .devbin/bins.tar.xz ]; then
  # the binaries know the tree and build folder by the absolute paths they were built with
  { read -r src; read -r bdir; read -r rev; } < .devbin/paths
  if [ "$src" != "$PWD" ] && { { [ -e "$src" ] && [ ! -L "$src" ]; } || ! mkdir -p "$(dirname "$src")" \
                               || ! ln -sfn "$PWD" "$src"; }; then
    echo "prebuilt: cannot link $src to this tree; building here"
  else
    mkdir -p "$bdir" && tar -xJf .devbin/bins.tar.xz -C "$bdir" \
      && export LD_LIBRARY_PATH="$bdir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if "$bdir/cli/wpack" --version > "$LOGS/prebuilt.log" 2>&1; then
      prebuilt=1 BUILD=$bdir
      echo "prebuilt binaries of $rev ($(elapsed))"
    else
      echo "prebuilt binaries do not start here ($(head -1 "$LOGS/prebuilt.log")); building here"
    fi
  fi
fi
if [ $prebuilt = 0 ]; then
  timeout "$LIMIT" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWPACK_CUDA=ON > "$LOGS/configure.log" 2>&1 \
    || { tail -20 "$LOGS/configure.log"; exit 1; }
  timeout "$LIMIT" cmake --build "$BUILD" -j"$(nproc)" > "$LOGS/build.log" 2>&1 \
    || { grep -m 20 -B 2 -A 5 -E "error|Error" "$LOGS/build.log"; exit 1; }
  echo "built ($(elapsed))"
fi

summary=()
if [ "${TESTS:-}" != none ]; then
  k=0
  for e in ${TEST_ENVS:--}; do
    k=$((k + 1))
    log="$LOGS/tests-$k.log"
    setting=()
    [ "$e" != - ] && setting=("$e")
    if [ $prebuilt = 1 ]; then  # the GPU test binaries themselves, a Catch2 spec as the filter
      rc=0 passed=""
      for t in gpu_tile_decode gpu_verify test_gpu_host; do
        # a binary with no test case in the spec is skipped (Catch2 fails a run that matches none)
        [ -n "$("$BUILD/tests/$t" --list-test-names-only ${TESTS:+"$TESTS"} 2>/dev/null)" ] || continue
        echo "== $t" >> "$log"
        env "${setting[@]}" timeout "$LIMIT" "$BUILD/tests/$t" ${TESTS:+"$TESTS"} >> "$log" 2>&1 || rc=$?
        passed+="$t: $(grep -E '^(All tests passed|test cases:|No test cases matched)' "$log" | tail -1); "
      done
      summary+=("tests ($e): rc $rc; $passed")
    else
      regex=()
      [ -n "${TESTS:-}" ] && regex=(-R "$TESTS")
      env "${setting[@]}" timeout "$LIMIT" ctest --test-dir "$BUILD" -L gpu "${regex[@]}" --output-on-failure > "$log" 2>&1
      rc=$?
      summary+=("ctest -L gpu ($e): rc $rc, $(grep -E 'tests passed|tests failed' "$log" | tail -1)")
    fi
    grep -E "\*\*\*Failed|Timeout|\(Failed\)|FAILED" "$log" | head -10
    echo "tests $k done ($(elapsed))"
  done
fi

if [ $# -gt 0 ]; then
  envs=${BENCH_ENVS:--}  # "-": one run, in the environment as it is
  i=0
  for e in $envs; do
    for bin in ${BENCH_BINS:-bench/bench_gpu_layers}; do
      i=$((i + 1))
      log="$LOGS/bench-$i.log"
      echo "env $e $bin" > "$log"
      setting=()
      [ "$e" != - ] && setting=("$e")
      env "${setting[@]}" timeout "$LIMIT" "$BUILD/$bin" "$@" >> "$log" 2>&1
      rc=$?
      summary+=("bench $i ($e $bin): rc $rc")
      # rows: scheme shape batch bits packed_MB kernel_us cuBLAS_us speedup GB/s %copy floor_us %floor
      # matmul_err exact
      while read -r line; do summary+=("  $line"); done < <(awk '$3 ~ /^[0-9]+$/ && $2 ~ /x/ {printf "%-10s %-11s b%-3s %8s us  cuBLAS %8s  %s  %s%% copy  %s%% floor  err %s  exact %s\n", $1, $2, $3, $6, $7, $8, $10, $12, $13, $14}' "$log")
      echo "bench $i done ($(elapsed))"
    done
  done
fi

echo "---- summary ($(elapsed)) ----"
printf '%s\n' "${summary[@]}"
