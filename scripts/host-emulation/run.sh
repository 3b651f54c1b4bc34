#!/usr/bin/env bash
# Compiles CUDA kernel sources as host C++ under the CUDA emulation in this directory (cuda_host.h)
# and checks each against a reference computed by its harness. No GPU or CUDA toolkit needed: g++
# and rustc (to print the contract constants from src/surgery/contract.rs). The checks:
#
#   attention  kernels/attention.cu   attention_check.cpp: forward/backward vs float64 attention
#   rows       kernels/block_rows.cu  rows_check.cpp: layer norm forward/backward, activations and
#                                     their derivatives, bias_add (f32/f16/bf16) vs float64
#   dropout    kernels/dropout.cu     dropout_check.cpp: bit for bit vs a reference Philox4x32-10
#                                     mask (itself checked against Random123's known answers)
#
#   scripts/host-emulation/run.sh [MODE] [CHECK...]
#     MODE     release (default): optimised build, every case
#              tsan: ThreadSanitizer build, a few cases each: a missing __syncthreads shows up as a
#                    data race on a __shared__ array (happens-before, whatever the interleaving)
#              asan: AddressSanitizer + UBSan build, a few cases each
#     CHECK    attention, rows, dropout (default: all three)
#
# Runs every selected check (even after one fails); exits 1 if any failed (or did not build).
#
# DGS_HOST_KERNEL_ATTENTION, DGS_HOST_KERNEL_ROWS, DGS_HOST_KERNEL_DROPOUT: another copy of that
# kernel source (e.g. a deliberately broken one, to see the check fail); kernels/ stays on the
# include path for dtype.cuh and the other headers. DGS_HOST_KERNEL is the older name of
# DGS_HOST_KERNEL_ATTENTION.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode="${1:-release}"
[ $# -gt 0 ] && shift
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(attention rows dropout)
build="${DGS_HOST_EMULATION_BUILD:-${TMPDIR:-/tmp}/dgs-host-emulation}/$mode"
mkdir -p "$build"

flags=(-std=c++17 -pthread -fno-strict-aliasing -DDGS_HOST_EMULATION -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas
       -I "$here" -I "$root/kernels" -I "$build")
run_args=()
case "$mode" in
  release) flags+=(-O2) ;;
  tsan) flags+=(-O1 -g -fsanitize=thread); run_args=(--quick) ;;
  asan) flags+=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined); run_args=(--quick) ;;
  *) echo "usage: $0 [release|tsan|asan] [attention|rows|dropout ...]" >&2; exit 2 ;;
esac

kernel_of() {  # CHECK → the kernel source it compiles
  case "$1" in
    attention) echo "${DGS_HOST_KERNEL_ATTENTION:-${DGS_HOST_KERNEL:-$root/kernels/attention.cu}}" ;;
    rows) echo "${DGS_HOST_KERNEL_ROWS:-$root/kernels/block_rows.cu}" ;;
    dropout) echo "${DGS_HOST_KERNEL_DROPOUT:-$root/kernels/dropout.cu}" ;;
    *) echo "unknown check '$1' (attention, rows, dropout)" >&2; return 2 ;;
  esac
}
for c in "${checks[@]}"; do kernel_of "$c" > /dev/null || exit 2; done

rustc --edition 2021 -O -o "$build/contract_header" "$here/contract_header.rs"
"$build/contract_header" > "$build/dgs_contract.cuh"

# Compile the kernels and harnesses two at a time (the kernel and its harness of one check
# together), then link; a check that does not build counts as failed.
declare -A built
for c in "${checks[@]}"; do
  g++ "${flags[@]}" -x c++ -c "$(kernel_of "$c")" -o "$build/${c}_kernel.o" &
  kpid=$!
  g++ "${flags[@]}" -c "$here/${c}_check.cpp" -o "$build/${c}_check.o" &
  hpid=$!
  ok=1
  wait "$kpid" || ok=0
  wait "$hpid" || ok=0
  if [ "$ok" = 1 ] && g++ "${flags[@]}" "$build/${c}_kernel.o" "$build/${c}_check.o" -o "$build/${c}_check"; then
    built[$c]=1
  else
    built[$c]=0
  fi
done

failed=()
for c in "${checks[@]}"; do
  echo "== $c ($(kernel_of "$c"), $mode)"
  start=$SECONDS
  if [ "${built[$c]}" = 1 ] && "$build/${c}_check" "${run_args[@]}"; then
    echo "== $c: ok ($((SECONDS - start)) s)"
  else
    [ "${built[$c]}" = 1 ] || echo "== $c: did not build"
    echo "== $c: FAILED ($((SECONDS - start)) s)"
    failed+=("$c")
  fi
  echo
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "host emulation ($mode): FAILED: ${failed[*]}"
  exit 1
fi
echo "host emulation ($mode): all passed: ${checks[*]}"
