#!/usr/bin/env bash
# nvcc's resource report (registers, stack, spills, shared memory) for every kernel, per target
# architecture, as a table. Needs the toolchain (scripts/install-cuda-toolchain.sh) and a build
# with the kernels (`cargo build --features cuda-kernels`, for the contract header build.rs
# generates); no GPU.
#   usage: scripts/kernel-resources.sh [ARCH ...]        (default: 80 90)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
archs=("${@:-80 90}")
# shellcheck disable=SC2206
[ $# -eq 0 ] && archs=(80 90)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The newest header build.rs wrote (the kernels include it).
header=$(ls -t "${CARGO_TARGET_DIR:-target}"/*/build/dgs-*/out/dgs_contract.cuh 2>/dev/null | head -1)
if [ -z "$header" ]; then
  echo "no dgs_contract.cuh under ${CARGO_TARGET_DIR:-target}: run cargo build --features cuda-kernels first" >&2
  exit 1
fi
printf '%-34s %-6s %5s %7s %7s %6s\n' kernel arch regs stack spills smem
for arch in "${archs[@]}"; do
  for f in kernels/*.cu; do
    "$NVCC" --cubin -O3 -std=c++17 -I kernels -I "$(dirname "$header")" -gencode "arch=compute_$arch,code=sm_$arch" \
      --resource-usage -o "$tmp/k.cubin" "$f" 2>&1 |
      awk -v arch="sm_$arch" '
        /Compiling entry function/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART + 1, RLENGTH - 2) }
        /bytes stack frame/ { stack = $1; spill = $5 + $9 }
        /Used [0-9]+ registers/ {
          regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs)
          smem = 0; if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
          printf "%-34s %-6s %5s %7s %7s %6s\n", name, arch, regs, stack, spill, smem
        }'
  done
done
