#!/bin/bash
# MiniLM end to end on the GPU machine: the BF16 fixture (bench/fixtures/minilm_bf16.py, made here:
# data/minilm-bf16.safetensors, git-ignored; carry it) packed in several ways with the wpack binary
# given, then `wpack verify --against --device cuda --batch 1,16 --json` on each, and one line per
# pack with the verify totals (kernel µs against cuBLAS µs at batch 1 and 16, the worst
# matmul_rel_error and matmul_output_error, the tensors GPU-checked, the kernels that ran).
#
#   device tool, carry [".devdeps", "data/minilm-bf16.safetensors"] (and a build of wpack):
#     bash tools/device-minilm.sh BUILD/cli/wpack
#
# PACKS (space-separated, ':' between the options of one pack): default
# "--scheme:int4:--codec:none --scheme:fp6:--codec:none ..." (below). Logs and JSON reports go to
# $OUT/minilm (or /tmp/minilm).
set -u
wpack=${1:?usage: device-minilm.sh path/to/wpack}
src=${MINILM:-data/minilm-bf16.safetensors}
out=${OUT:-/tmp}/minilm
mkdir -p "$out"
packs=${PACKS:-"--scheme:int4:--codec:none --scheme:fp6:--codec:none --scheme:int8:--codec:none
--scheme:fp8:--codec:none --scheme:lut4:--codec:none --scheme:nf4:--codec:none --scheme:fp4:--codec:none
--codec:exp4 --scheme:int4 --codec:rans"}
[ -f "$src" ] || { echo "no $src (carry data/minilm-bf16.safetensors)"; exit 1; }
rows=()
i=0
for p in $packs; do
  i=$((i + 1))
  opts=(${p//:/ })
  w="$out/m$i.wpk"
  if ! "$wpack" compress "$src" -o "$w" -f -q "${opts[@]}" 2> "$out/compress-$i.log"; then
    rows+=("${opts[*]}: compress failed: $(head -1 "$out/compress-$i.log")")
    continue
  fi
  "$wpack" verify "$w" --against "$src" --device cuda --batch 1,16 --json > "$out/verify-$i.json" 2> "$out/verify-$i.log"
  rc=$?
  rows+=("$(python3 - "$out/verify-$i.json" "$rc" "${opts[*]}" "$(stat -c %s "$w")" <<'EOF'
import json, sys
path, rc, opts, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{opts}: exit {rc}, no JSON report ({e})"); sys.exit()
tot = {t["batch"]: t for t in r.get("totals", [])}
def col(b):
    t = tot.get(b)
    if not t or not t.get("tensors"): return "-"
    k, c = t["kernel_time_us"], t.get("cublas_bf16_time_us")
    return f"{k:8.1f} / {c:7.1f} us ({c / k:.2f}x)" if c else f"{k:8.1f} us"
ran = [b for t in r["tensors"] for b in t.get("batches", []) if "kernel" in b]
worst = lambda key: max([b.get(key) if b.get(key) is not None else float("nan") for b in ran] or [0])
kernels = sorted({b["kernel"] for b in ran})
checked = sum(1 for t in r["tensors"] if t.get("decode_bit_exact"))
print(f"{opts:28s} {size / 2**20:6.1f} MiB exit {rc} ok {r['ok']}  b1 {col(1)}  b16 {col(16)}  "
      f"rel {worst('matmul_rel_error'):.1e} out {worst('matmul_output_error'):.1e}  bit-exact {checked}  {','.join(kernels)}")
EOF
)")
done
echo "---- MiniLM ($src): pack, size, verify exit, batch 1 and 16 totals (kernels / cuBLAS), worst errors ----"
printf '%s\n' "${rows[@]}"
