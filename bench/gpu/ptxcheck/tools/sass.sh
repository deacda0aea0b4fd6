#!/usr/bin/env bash
# sass.sh DIR: for each DIR/*.ptx run `ptxas -v -arch=sm_90` (registers, spills) and nvdisasm -> DIR/*.sass.
# CUDA_BIN: folder with ptxas and nvdisasm (default /tmp/apt-nf/x/usr/bin, extracted from Debian's
# nvidia-cuda-toolkit 11.8 .deb; 11.8 reads PTX ISA <= 7.8, so generate with `ptxcheck --isa ISA_78`).
set -euo pipefail
B=${CUDA_BIN:-/tmp/apt-nf/x/usr/bin}
for f in "$1"/*.ptx; do
  c=${f%.ptx}.cubin
  echo "== $(basename "$f")"
  "$B/ptxas" -v -arch=sm_90 "$f" -o "$c" 2>&1 | grep -E 'stack|registers' | sed 's/^ *//'
  "$B/nvdisasm" -c "$c" > "${f%.ptx}.sass"
done
