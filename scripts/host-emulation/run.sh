#!/usr/bin/env bash
# Compiles kernels/attention.cu as host C++ under the CUDA emulation in this directory and checks
# it against a float64 reference (attention_check.cpp). No GPU or CUDA toolkit needed: g++ and
# rustc (to print the contract constants from src/surgery/contract.rs).
#
#   scripts/host-emulation/run.sh          optimised build, every case
#   scripts/host-emulation/run.sh tsan     ThreadSanitizer build, a few cases: a missing
#                                          __syncthreads shows up as a data race on a __shared__
#                                          array (happens-before, whatever the interleaving)
#   scripts/host-emulation/run.sh asan     AddressSanitizer + UBSan build, a few cases
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode="${1:-release}"
build="${DGS_HOST_EMULATION_BUILD:-${TMPDIR:-/tmp}/dgs-host-emulation}/$mode"
mkdir -p "$build"

rustc --edition 2021 -O -o "$build/contract_header" "$here/contract_header.rs"
"$build/contract_header" > "$build/dgs_contract.cuh"

flags=(-std=c++17 -pthread -fno-strict-aliasing -DDGS_HOST_EMULATION -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas
       -I "$here" -I "$root/kernels" -I "$build")
run_args=()
case "$mode" in
  release) flags+=(-O2) ;;
  tsan) flags+=(-O1 -g -fsanitize=thread); run_args=(--quick) ;;
  asan) flags+=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined); run_args=(--quick) ;;
  *) echo "usage: $0 [release|tsan|asan]" >&2; exit 2 ;;
esac

# DGS_HOST_KERNEL: another copy of the kernel source (e.g. a deliberately broken one, to see the
# check fail); kernels/ stays on the include path for dtype.cuh.
g++ "${flags[@]}" -x c++ -c "${DGS_HOST_KERNEL:-$root/kernels/attention.cu}" -o "$build/attention.o"
g++ "${flags[@]}" -c "$here/attention_check.cpp" -o "$build/attention_check.o"
g++ "${flags[@]}" "$build/attention.o" "$build/attention_check.o" -o "$build/attention_check"
exec "$build/attention_check" "${run_args[@]}"
