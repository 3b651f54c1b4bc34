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
#   surgery    kernels/rowwise.cu,    surgery_check.cpp: the gradient-surgery kernels (row
#              multi_dir.cu, gram.cu, projection, K-direction projection, Gram and combine over
#              combine.cu, pcgrad.cu  tensor lists, PCGrad's device solve; f32/f16/bf16) vs
#                                     float64, PCGrad's weights bit for bit
#   adam       kernels/adam.cu        adam_check.cpp: the multi-tensor Adam update bit for bit vs
#                                     the same f32 operations in the same order (f32/f16/bf16
#                                     gradients, awkward lengths, grid-stride reruns)
#
#   scripts/host-emulation/run.sh [MODE] [CHECK...]
#     MODE     release (default): optimised build, every case
#              tsan: ThreadSanitizer build, a few cases each: a missing __syncthreads shows up as a
#                    data race on a __shared__ array (happens-before, whatever the interleaving)
#              asan: AddressSanitizer + UBSan build, a few cases each
#     CHECK    attention, rows, dropout, surgery, adam (default: all five)
#
# Runs every selected check (even after one fails); exits 1 if any failed (or did not build).
#
# DGS_HOST_KERNEL_ATTENTION, DGS_HOST_KERNEL_ROWS, DGS_HOST_KERNEL_DROPOUT, DGS_HOST_KERNEL_ADAM: another copy of that
# kernel source (e.g. a deliberately broken one, to see the check fail); kernels/ stays on the
# include path for dtype.cuh and the other headers. DGS_HOST_KERNEL is the older name of
# DGS_HOST_KERNEL_ATTENTION. The surgery check compiles five sources, one variable each:
# DGS_HOST_KERNEL_ROWWISE, DGS_HOST_KERNEL_MULTI_DIR, DGS_HOST_KERNEL_GRAM,
# DGS_HOST_KERNEL_COMBINE, DGS_HOST_KERNEL_PCGRAD.
#
# Every kernel source is compiled with cuda_host.h included first (-include), as nvcc includes
# cuda_runtime.h before a .cu file: a kernel that includes no CUDA header (pcgrad.cu) still sees
# __global__ and the intrinsics.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mode="${1:-release}"
[ $# -gt 0 ] && shift
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(attention rows dropout surgery adam)
build="${DGS_HOST_EMULATION_BUILD:-${TMPDIR:-/tmp}/dgs-host-emulation}/$mode"
mkdir -p "$build"

flags=(-std=c++17 -pthread -fno-strict-aliasing -ffp-contract=off -DDGS_HOST_EMULATION -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas
       -I "$here" -I "$root/kernels" -I "$build")
run_args=()
case "$mode" in
  release) flags+=(-O2) ;;
  tsan) flags+=(-O1 -g -fsanitize=thread); run_args=(--quick) ;;
  asan) flags+=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined); run_args=(--quick) ;;
  *) echo "usage: $0 [release|tsan|asan] [attention|rows|dropout|surgery|adam ...]" >&2; exit 2 ;;
esac

kernels_of() {  # CHECK → the kernel sources it compiles, one a line
  case "$1" in
    attention) echo "${DGS_HOST_KERNEL_ATTENTION:-${DGS_HOST_KERNEL:-$root/kernels/attention.cu}}" ;;
    rows) echo "${DGS_HOST_KERNEL_ROWS:-$root/kernels/block_rows.cu}" ;;
    dropout) echo "${DGS_HOST_KERNEL_DROPOUT:-$root/kernels/dropout.cu}" ;;
    adam) echo "${DGS_HOST_KERNEL_ADAM:-$root/kernels/adam.cu}" ;;
    surgery)
      echo "${DGS_HOST_KERNEL_ROWWISE:-$root/kernels/rowwise.cu}"
      echo "${DGS_HOST_KERNEL_MULTI_DIR:-$root/kernels/multi_dir.cu}"
      echo "${DGS_HOST_KERNEL_GRAM:-$root/kernels/gram.cu}"
      echo "${DGS_HOST_KERNEL_COMBINE:-$root/kernels/combine.cu}"
      echo "${DGS_HOST_KERNEL_PCGRAD:-$root/kernels/pcgrad.cu}"
      ;;
    *) echo "unknown check '$1' (attention, rows, dropout, surgery, adam)" >&2; return 2 ;;
  esac
}
for c in "${checks[@]}"; do kernels_of "$c" > /dev/null || exit 2; done

rustc --edition 2021 -O -o "$build/contract_header" "$here/contract_header.rs"
"$build/contract_header" > "$build/dgs_contract.cuh"

# Compile each check's harness and kernels two at a time, then link; a check that does not build
# counts as failed.
declare -A built
for c in "${checks[@]}"; do
  mapfile -t sources < <(kernels_of "$c")
  objects=()
  jobs=("$here/${c}_check.cpp=$build/${c}_check.o")
  for i in "${!sources[@]}"; do
    objects+=("$build/${c}_kernel$i.o")
    jobs+=("${sources[$i]}=$build/${c}_kernel$i.o")
  done
  ok=1
  for ((j = 0; j < ${#jobs[@]}; j += 2)); do
    pids=()
    for job in "${jobs[@]:j:2}"; do
      src="${job%=*}" obj="${job##*=}"
      if [ "$obj" = "$build/${c}_check.o" ]; then
        g++ "${flags[@]}" -c "$src" -o "$obj" &
      else
        g++ "${flags[@]}" -include cuda_host.h -x c++ -c "$src" -o "$obj" &
      fi
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
  done
  if [ "$ok" = 1 ] && g++ "${flags[@]}" "${objects[@]}" "$build/${c}_check.o" -o "$build/${c}_check"; then
    built[$c]=1
  else
    built[$c]=0
  fi
done

failed=()
for c in "${checks[@]}"; do
  echo "== $c ($(kernels_of "$c" | paste -sd ' '), $mode)"
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
