#!/bin/bash
# On the lent GPU machine, after tools/device-check.sh has unpacked .devbin (or built): Nsight
# Compute on one launch of the bulk-copy GEMV per scheme and batch of bench_gpu_layers, with the
# per-instruction warp-state sampling (SourceCounters) beside the usual sections. Writes, per
# case, the details page and the SASS source page as CSV under $OUT/prof/ and prints a short
# summary (time, issue slots busy, eligible warps, pipe utilisation).
#
#   PROF_CASES="int4:1 fp6:16" PROF_SHAPE=28672x8192 BUILD=/work/main/build-gpu bash tools/device-profile.sh
#
# Environment: BUILD (the build folder with bench/bench_gpu_layers), PROF_CASES (scheme:batch
# list), PROF_SHAPE, PROF_KERNEL (ncu kernel-name regex, default the bulk-copy GEMV), PROF_BIN
# (a bench binary relative to BUILD, default bench/bench_gpu_layers).
set -u
BUILD=${BUILD:?the build folder}
BIN=$BUILD/${PROF_BIN:-bench/bench_gpu_layers}
KERNEL=${PROF_KERNEL:-quant_gemv_tma_kernel}
SHAPE=${PROF_SHAPE:-28672x8192}
dir=${OUT:-/tmp}/prof
mkdir -p "$dir"
ncu --version | tail -1
sections=(--section SpeedOfLight --section SchedulerStats --section WarpStateStats --section InstructionStats
          --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section SourceCounters
          --metrics sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fmaheavy_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_shared_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_active.min,sm__cycles_active.max,sm__cycles_active.avg)
for c in ${PROF_CASES:-int4:1}; do
  scheme=${c%%:*} batch=${c##*:}
  name=$scheme-b$batch
  timeout 300 ncu --clock-control none --kernel-name "regex:$KERNEL" --launch-skip 4 --launch-count 1 \
    "${sections[@]}" --import-source no -f -o "$dir/$name" \
    "$BIN" --shapes "$SHAPE" --schemes "$scheme" --batch "$batch" --runs 20 --warmup 1 > "$dir/$name.run.log" 2>&1 \
    || { echo "$name: ncu failed"; tail -5 "$dir/$name.run.log"; continue; }
  ncu -i "$dir/$name.ncu-rep" --page details --csv > "$dir/$name.details.csv" 2>/dev/null
  ncu -i "$dir/$name.ncu-rep" --page source --csv --print-source sass > "$dir/$name.sass.csv" 2>/dev/null
  rm -f "$dir/$name.ncu-rep"
  echo "== $name"
  grep -E '"(Duration|Issue Slots Busy|Eligible Warps Per Scheduler|Active Warps Per Scheduler|DRAM Throughput|Executed Instructions|Registers Per Thread|sm__[a-z_.]+)"' \
    "$dir/$name.details.csv" | awk -F'","' '{printf "  %s %s %s\n", $(NF-2), $NF, $(NF-1)}' | tr -d '"'
done
