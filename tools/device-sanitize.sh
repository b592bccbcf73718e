#!/bin/bash
# The GPU tests under NVIDIA's compute-sanitizer, on the GPU machine: each Catch2 test case of the
# test programs given runs alone under each tool named (memcheck: out-of-bounds and misaligned
# accesses, API errors, leaks; racecheck: shared-memory hazards; synccheck: barrier misuse;
# initcheck: reads of uninitialised device memory), a few at a time, each within a time limit.
# One line per test and tool, then a summary; the sanitizer's logs of the runs that did not pass go
# to $OUT/sanitize (or /tmp/sanitize). Exits 1 when any run did not pass.
#
#   device tool, carry [".devdeps"] (and a CUDA build, e.g. build-dev):
#     bash tools/device-sanitize.sh build-dev/tests/gpu_tile_decode [build-dev/tests/gpu_verify ...]
#
# TOOLS (default "memcheck racecheck synccheck initcheck"), TEST_TIMEOUT (s, default 240), JOBS
# (default 4), SKIP (an extended regex of test names left out, default none), ONLY (an extended
# regex of the test names run, default all).
#
# racecheck reports WAR hazards inside cuBLAS's own kernels (nvjet_sm90_tss_*, in the lossless
# verify test on an H200): a run whose every hazard lies in a cuBLAS kernel (its name, up to the
# first ':', holds nvjet, xmma, cutlass or cublas; wpack's kernels are in namespace wpack) is
# "cublas-only" when the test passed, listed but not a failure. Leaving those kernels out with the
# sanitizer's kernel-name exclusion made racecheck fail instead ("failed to handle a hardware
# exception", CUDA illegal address) in a test that passes racecheck with every kernel checked.
set -u
[ $# -ge 1 ] || { echo "usage: device-sanitize.sh TEST_PROGRAM..."; exit 2; }
san=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
[ -n "$san" ] || { echo "no compute-sanitizer on this machine"; exit 1; }
out=${OUT:-/tmp}/sanitize
mkdir -p "$out"
tools=${TOOLS:-"memcheck racecheck synccheck initcheck"}
limit=${TEST_TIMEOUT:-240}
jobs=${JOBS:-4}
"$san" --version | tail -1

list="$out/cases.txt"
: > "$list"
for prog in "$@"; do
  # Catch2 v2 prints the names one per line, indented by two spaces when they wrap; ours do not.
  "$prog" --list-test-names-only | sed '/^$/d' | while IFS= read -r name; do
    [ -n "${ONLY:-}" ] && ! [[ $name =~ ${ONLY} ]] && continue
    [ -n "${SKIP:-}" ] && [[ $name =~ ${SKIP} ]] && continue
    # Catch2 v2 takes a leading or trailing '*' of a test spec as a wildcard, escaped or not.
    if [[ $name == \** || $name == *\* ]]; then echo "left out (a name Catch2 cannot select alone): $name" >&2; continue; fi
    for tool in $tools; do printf '%s\t%s\t%s\n' "$tool" "$prog" "$name" >> "$list"; done
  done
done

run_one() {
  local tool=$1 prog=$2 name=$3
  local log="$out/$(basename "$prog")-$tool-$(printf '%s' "$name" | md5sum | cut -c1-8).log"
  local extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  # every racecheck hazard printed, so that the verdict sees which kernels they are in
  local print_limit=50
  [ "$tool" = racecheck ] && print_limit=1000000
  local t0=$SECONDS
  # Catch2 takes a test name as a pattern: escape its wildcard and its ',', '[' and '\'.
  local spec=${name//\\/\\\\}
  spec=${spec//\*/\\*}
  spec=${spec//,/\\,}
  spec=${spec//\[/\\[}
  printf '%s\n' "$tool: $name" > "$log"
  timeout "$limit" "$san" --tool "$tool" --print-limit "$print_limit" "${extra[@]}" "$prog" "$spec" >> "$log" 2>&1
  local rc=$?
  # The verdict from the sanitizer's summary lines, not the exit code (Catch2's is the number of
  # failed assertions, which may be any value).
  local verdict=ok
  if ! grep -qE '^========= (ERROR|RACECHECK) SUMMARY' "$log"; then verdict=timeout
  elif grep -qE '^========= ERROR SUMMARY: [1-9]|^========= RACECHECK SUMMARY: .*\([1-9][0-9]* error' "$log"; then
    verdict=ERRORS
    # racecheck: the kernels its hazards lie in, from "Read/Write Thread (x,y,z) at KERNEL+0xPC"
    # lines; cuBLAS's own: nvjet_*, *xmma*, cutlass*, *cublas* (wpack's are in namespace wpack)
    local hazard='^=========     (Read|Write) Thread'
    if [ "$tool" = racecheck ] && grep -qE "$hazard" "$log" && \
       ! grep -E "$hazard" "$log" | sed -E 's/.* at //; s/\+0x[0-9a-f]+$//' | grep -qvE '^[^:]*(nvjet|xmma|cutlass|cublas)'; then
      verdict=cublas-only
      [ $rc -ne 0 ] && verdict="test-failed(rc=$rc)"  # the test's own failure first
    fi
  elif [ $rc -ne 0 ]; then verdict="test-failed(rc=$rc)"
  fi
  [ "$verdict" = timeout ] && [ $rc -ne 124 ] && verdict="no-summary(rc=$rc)"
  local summary
  summary=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY)' "$log" | tr '\n' ' ' | sed 's/========= //g')
  printf '%-9s %-11s %4ds  %s: %s  [%s]\n' "$tool" "$verdict" $((SECONDS - t0)) "$(basename "$prog")" "$name" "$summary"
  [ "$verdict" = ok ] && rm -f "$log"   # keep the logs worth reading
  [ "$verdict" = cublas-only ] && { grep -vE '^=========     (Saved host|    Host Frame)' "$log" | head -200 > "$log.head"; mv "$log.head" "$log"; }
}
export -f run_one
export out limit san

tr '\n' '\0' < "$list" | xargs -0 -P "$jobs" -I{} bash -c 'IFS=$'"'"'\t'"'"' read -r t p n <<< "$1"; run_one "$t" "$p" "$n"' _ {} \
  | tee "$out/results.txt"
echo
echo "summary (tool: ok / hazards in cuBLAS alone / errors / test failed / timed out):"
for tool in $tools; do
  printf '  %-9s %s / %s / %s / %s / %s\n' "$tool" \
    "$(grep -c "^$tool *ok " "$out/results.txt")" "$(grep -c "^$tool *cublas-only " "$out/results.txt")" \
    "$(grep -c "^$tool *ERRORS " "$out/results.txt")" \
    "$(grep -c "^$tool *test-failed" "$out/results.txt")" "$(grep -c "^$tool *timeout " "$out/results.txt")"
done
# Exit 1 when any run did not pass (errors, a failed test, a time-out); hazards in cuBLAS alone pass.
! grep -qvE '^[a-z]+ +(ok|cublas-only) ' "$out/results.txt"
