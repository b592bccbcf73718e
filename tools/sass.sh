#!/bin/bash
# SASS of a kernels/*.cu file for sm_90, here, without a GPU: compiles it with the CUDA 13 nvcc
# (/usr/local/cuda) to a cubin, rewrites the ELF header's architecture fields to the encoding
# Debian's CUDA 11.8 tools read (CUDA 12.8+ changed e_flags and the ABI version; the sm_90 SASS
# itself is the same), and disassembles it with /usr/bin/cuobjdump.
#
#   tools/sass.sh kernels/quant_gemv_tma.cu [FUNCTION-REGEX] > out.sass
#
# FUNCTION-REGEX (grep -E on the mangled name) keeps only the matching functions. A counting aid,
# not a build step: check important figures against cuobjdump on the GPU machine.
set -euo pipefail
src=${1:?usage: tools/sass.sh FILE.cu [FUNCTION-REGEX]}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/local/cuda/bin/nvcc -O3 -DNDEBUG -arch=sm_90 --expt-relaxed-constexpr -std=c++17 -I"$root" -cubin \
  -o "$tmp/k.cubin" "$src"
python3 - "$tmp/k.cubin" <<'PY'
import struct, sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
if b[:4] != b'\x7fELF':
    sys.exit(p + ': not an ELF file')
if struct.unpack_from('<I', b, 0x30)[0] != 0x5A055A:
    b[7], b[8] = 51, 7                    # EI_OSABI (CUDA), EI_ABIVERSION as CUDA 11.8 writes them
    struct.pack_into('<I', b, 0x30, 0x5A055A)  # e_flags: EF_CUDA_SM90 | PTX SM90, the old encoding
open(p, 'wb').write(b)
PY
/usr/bin/cuobjdump -sass "$tmp/k.cubin" > "$tmp/k.sass"
if [ $# -ge 2 ]; then
  awk -v re="$2" '/Function : /{keep = ($0 ~ re)} keep' "$tmp/k.sass"
else
  cat "$tmp/k.sass"
fi
