#!/usr/bin/env bash
# Build everything the GPU machine runs, here (no GPU needed), into the git-ignored .carry/:
# the GPU test binaries (built with DGS_GPU_TESTS=1, so their CUDA cases run instead of being
# ignored), the CUDA benchmark and the dgs binary (stripped release builds, packed in
# bundle.tar.xz), and the scripts.
#
# With --train it also builds, with candle's CUDA backend (`--features cuda`, linked against the
# toolchain's stubs here; the GPU machine's real libraries are found at run time), `bin/dgs-cuda`
# (training, `dgs bench step`) and the GPU training tests; gpu-check.sh then also runs the
# training checks and the PyTorch step reference. The first such build compiles candle's
# kernels: ≈ 20 min on 2 cores.
#
#   scripts/build-gpu-bundle.sh [--train]   then run scripts/gpu-check.sh there (docs/gpu.md)
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=0
if [ "${1:-}" = "--train" ]; then TRAIN=1; fi
if [ -n "${NVCC_APPEND_FLAGS:-}" ]; then
  echo "NVCC_APPEND_FLAGS is set ($NVCC_APPEND_FLAGS): unset it, GPU builds must be optimised" >&2
  exit 1
fi

CUDA_PREFIX=${DGS_CUDA_PREFIX:-$PWD/.cuda}
if [ "$TRAIN" = 1 ] && [ ! -d "$CUDA_PREFIX/lib" ]; then
  cargo fetch --quiet
  bash scripts/install-cuda-toolchain.sh --stubs "$CUDA_PREFIX"
fi
[ -f "$CUDA_PREFIX/env.sh" ] || bash scripts/install-cuda-toolchain.sh "$CUDA_PREFIX"
# shellcheck disable=SC1091
source "$CUDA_PREFIX/env.sh"

export DGS_GPU_TESTS=1
export CARGO_PROFILE_RELEASE_STRIP=true
TARGET=${CARGO_TARGET_DIR:-target}/gpu-bundle
rm -rf .carry && mkdir -p .carry/bin .carry/tests

# copy_tests FEATURES TEST...: build those test binaries and copy them into .carry/tests.
copy_tests() {
  local features=$1; shift
  local args=()
  for t in "$@"; do args+=(--test "$t"); done
  CARGO_TARGET_DIR=$TARGET cargo test --release --features "$features" --no-run \
      --message-format=json "${args[@]}" | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        dst = os.path.join(".carry/tests", m["target"]["name"])
        shutil.copy(m["executable"], dst)
        print("test binary:", dst)
'
}
# Only the test files with GPU cases travel (the CPU cases run in CI); the kernel tests need
# only our kernels, so they are built without candle's CUDA backend (a fraction of the size).
# Test files that need candle's CUDA backend say `feature = "cuda"`; they travel with --train.
names() { xargs -r -n1 basename | sed 's/\.rs$//'; }
# A test's GPU cases may live in a module file under tests/NAME/: it counts for tests/NAME.rs.
mapfile -t gpu_tests < <(grep -rl 'backend_tests!\|dgs_gpu_tests' tests --include='*.rs' |
  grep -v '^tests/common/' | sed -E 's|^tests/([^/]+)/.*|tests/\1.rs|' | sort -u | names)
mapfile -t candle_tests < <(grep -l 'feature = "cuda"' tests/*.rs | names)
kernel_tests=()
for t in "${gpu_tests[@]}"; do
  [[ " ${candle_tests[*]} " == *" $t "* ]] || kernel_tests+=("$t")
done
copy_tests cuda-kernels "${kernel_tests[@]}"
[ "$TRAIN" = 1 ] && copy_tests cuda "${candle_tests[@]}"
CARGO_TARGET_DIR=$TARGET cargo build --release --features cuda-kernels --bench surgery_cuda \
    --bench attention_cuda --message-format=json 2>/dev/null |
  python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    name = m.get("target", {}).get("name")
    if m.get("reason") == "compiler-artifact" and m.get("executable") and name in ("surgery_cuda", "attention_cuda"):
        shutil.copy(m["executable"], ".carry/bin/" + name)
        print("bench binary: .carry/bin/" + name)
'
CARGO_TARGET_DIR=$TARGET cargo build --release --features cuda-kernels --bin dgs
cp "$TARGET/release/dgs" .carry/bin/dgs
if [ "$TRAIN" = 1 ]; then
  # Same target dir as the test binaries above: candle's CUDA kernels are compiled once.
  CARGO_TARGET_DIR=$TARGET cargo build --release --features cuda --bin dgs
  cp "$TARGET/release/dgs" .carry/bin/dgs-cuda
fi
# The binaries share the embedded fatbins and candle's PTX: one xz archive whose dictionary spans
# the whole tar stores each copy once (decompression needs ~200 MB of memory).
tar -C .carry -cf - tests bin | xz -T2 --lzma2=preset=6,dict=192MiB > .carry/bundle.tar.xz
rm -rf .carry/tests .carry/bin
cp scripts/gpu-check.sh scripts/torch_reference.py scripts/bench-summary.py \
   scripts/torch_reference_step.py scripts/official_loss.py scripts/step-ratios.py \
   scripts/kernel-ratios.py scripts/ncu-summary.py .carry/
du -sh .carry .carry/*
