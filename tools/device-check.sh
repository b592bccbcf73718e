#!/bin/bash
# One run on the lent GPU machine (../shared/device/README.md): configure and build the working
# tree, run the GPU tests, then bench_gpu_layers with this script's arguments, each step under its
# own time limit so that a hang cannot spend the session's device time. Logs go to $OUT/logs.tgz
# (one file: the device tool returns only a few), a short summary is printed last.
#
#   device tool, carry [".devdeps"]:
#     bash tools/device-check.sh --shapes 8192x8192,28672x8192 --schemes int4,int8 --batch 1,16
#
# Environment: BUILD (default /tmp/wpack-dev), TESTS (a ctest -R regex; default all GPU tests,
# "none" skips them), BENCH_ENVS (space-separated VAR=VALUE sets, one bench run each, e.g.
# "X=0 X=1 X=0": A/B of an environment switch, alternating), STEP_LIMIT (seconds, default 240).
set -u
BUILD=${BUILD:-/tmp/wpack-dev}
LIMIT=${STEP_LIMIT:-240}
LOGS=$(mktemp -d)
T0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }
finish() { (cd "$LOGS" && tar czf "${OUT:-/tmp}/logs.tgz" .); }
trap finish EXIT

[ -f .devdeps/env.sh ] && source .devdeps/env.sh
timeout "$LIMIT" cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWPACK_CUDA=ON > "$LOGS/configure.log" 2>&1 \
  || { tail -20 "$LOGS/configure.log"; exit 1; }
timeout "$LIMIT" cmake --build "$BUILD" -j"$(nproc)" > "$LOGS/build.log" 2>&1 \
  || { grep -m 20 -B 2 -A 5 -E "error|Error" "$LOGS/build.log"; exit 1; }
echo "built ($(elapsed))"

summary=()
if [ "${TESTS:-}" != none ]; then
  regex=()
  [ -n "${TESTS:-}" ] && regex=(-R "$TESTS")
  timeout "$LIMIT" ctest --test-dir "$BUILD" -L gpu "${regex[@]}" --output-on-failure > "$LOGS/ctest.log" 2>&1
  rc=$?
  summary+=("ctest -L gpu: rc $rc, $(grep -E 'tests passed|tests failed' "$LOGS/ctest.log" | tail -1)")
  grep -E "\*\*\*Failed|Timeout|\(Failed\)" "$LOGS/ctest.log" | head -10
  echo "tests done ($(elapsed))"
fi

if [ $# -gt 0 ]; then
  envs=${BENCH_ENVS:--}  # "-": one run, in the environment as it is
  i=0
  for e in $envs; do
    i=$((i + 1))
    log="$LOGS/bench-$i.log"
    echo "env $e" > "$log"
    setting=()
    [ "$e" != - ] && setting=("$e")
    env "${setting[@]}" timeout "$LIMIT" "$BUILD/bench/bench_gpu_layers" "$@" >> "$log" 2>&1
    rc=$?
    summary+=("bench $i ($e): rc $rc")
    # rows: scheme shape batch ... kernel_us cuBLAS_us speedup GB/s %copy matmul_err exact
    while read -r line; do summary+=("  $line"); done < <(awk '$3 ~ /^[0-9]+$/ && $2 ~ /x/ {printf "%-10s %-11s b%-3s %8s us  cuBLAS %8s  %s  %s%% copy  err %s  exact %s\n", $1, $2, $3, $6, $7, $8, $10, $11, $12}' "$log")
    echo "bench $i done ($(elapsed))"
  done
fi

echo "---- summary ($(elapsed)) ----"
printf '%s\n' "${summary[@]}"
