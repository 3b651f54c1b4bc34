#!/usr/bin/env bash
# The one script to run on a GPU machine (H100/H200), from the repository root, after
# scripts/build-gpu-bundle.sh has filled .carry/ on the build machine (see docs/gpu.md).
# Most important first, each part under its own time limit and all under one deadline
# (DGS_GPU_DEADLINE seconds, default 500), so a short lease still brings back the checks that
# matter; a part with too little time left is reported as not run:
#   1. the GPU cases of every test binary (built with DGS_GPU_TESTS=1: the CUDA kernels against
#      the CPU reference in f32/f16/bf16, and with a --train bundle the GPU training tests);
#      the CPU cases run in CI and are filtered out here,
#   2. `dgs self-check --device cuda`,
#   3. with a --train bundle: `dgs bench step` (ViT-B/32 and ViT-L/14, batch 32, f32 and bf16),
#      the official PyTorch training step on the same sizes, and their ratios,
#   4. with a --train bundle: `dgs demo --device cuda` (train + evaluate the demo on the GPU),
#   5. the kernel benchmarks (criterion: surgery, fused attention) and the PyTorch kernel
#      reference (surgery, SDPA), and their ratios,
#   (profile) one ViT-L/14 bf16 DGS step under ncu and the PyTorch step under torch.profiler,
# then a short table. Logs go to $OUT (default ./gpu-out): summary.txt, dgs_step.json, torch_step.json and
# gpu-logs.tar.gz (every log, the criterion estimates).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-./gpu-out}
DEADLINE=${DGS_GPU_DEADLINE:-500}
mkdir -p "$OUT"
# The device tool brings back only a few files from $OUT: logs are written to a scratch folder
# and packed into $OUT/gpu-logs.tar.gz at the end, beside summary.txt and the step JSONs.
LOGS=$(mktemp -d)
CARRY=$(mktemp -d)
trap 'rm -rf "$CARRY" "$LOGS"' EXIT
tar -C "$CARRY" -xJf "$HERE/bundle.tar.xz" || { echo "cannot unpack $HERE/bundle.tar.xz" >&2; exit 2; }
cp "$HERE"/*.py "$CARRY/"
PY=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1

# dgs-cuda and gpu_train link candle's CUDA libraries (cuBLAS, cuRAND, the runtime), and the layer's
# products load cuBLASLt at run time (tests/gemm.rs): where the
# loader does not know them, take them from the CUDA toolkit or the PyTorch install.
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
  ldconfig -p 2>/dev/null | grep -q "$lib" && continue
  found=$(find /usr/local/cuda*/ /opt/torch/.venv /usr/lib /usr/local/lib -name "$lib" 2>/dev/null | head -1)
  [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
[ -x "$CARRY/bin/dgs-cuda" ] && ldd "$CARRY/bin/dgs-cuda" > "$LOGS/ldd-dgs-cuda.txt" 2>&1

date -u > "$LOGS/date.txt"
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1 || true
declare -a rows=()
fail=0

# part NAME MAX_SECONDS COMMAND...: run under min(MAX, time left), logging to $LOGS/NAME.log.
part() {
  local name=$1 max=$2; shift 2
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 20 ]; then
    rows+=("$name: NOT RUN (deadline)"); return 1
  fi
  [ "$max" -gt "$left" ] && max=$left
  local t0=$SECONDS
  timeout "$max" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - t0))
  if [ $rc = 0 ]; then
    rows+=("$name: ok (${took}s)")
  elif [ $rc = 124 ]; then
    rows+=("$name: TIMED OUT after ${took}s (see $name.log)"); fail=1
  else
    rows+=("$name: FAILED rc=$rc (see $name.log)"); fail=1
  fi
  return $rc
}

# DGS_GPU_PARTS picks parts (comma separated; default all): tests, self-check, step, profile,
# demo, kernels.
PARTS=",${DGS_GPU_PARTS:-tests,self-check,step,profile,demo,kernels},"
want() { [[ $PARTS == *",$1,"* ]]; }

# 1. GPU test cases.
want tests && for t in "$CARRY"/tests/*; do
  name=$(basename "$t")
  case $name in
    cuda_device|gpu_train) filter=() ;;
    *) filter=("cuda::") ;;
  esac
  part "test-$name" 180 "$t" "${filter[@]}"
  line=$(grep -E '^test result:' "$LOGS/test-$name.log" 2>/dev/null | tail -1)
  [ -n "$line" ] && rows[${#rows[@]}-1]+=" — ${line#test result: }"
done

# 2. Self-check.
if want self-check; then
  part self-check-cuda 60 "$CARRY/bin/dgs" self-check --device cuda
  rows[${#rows[@]}-1]+=" — $(grep -E 'passed, [0-9]+ failed' "$LOGS/self-check-cuda.log" | tail -1)"
fi

# 3. Training step against PyTorch.
if [ -x "$CARRY/bin/dgs-cuda" ]; then
  if want step; then
    part dgs_step 200 "$CARRY/bin/dgs-cuda" bench step --device cuda --json "$LOGS/dgs_step.json"
    # The layer op's device path (bf16 only: the fused attention's types), beside the default.
    part dgs_step_fused 150 env DGS_CUDA_LAYER=fused "$CARRY/bin/dgs-cuda" bench step --device cuda \
      --dtypes bf16 --json "$LOGS/dgs_step_fused.json"
    part torch_step 300 "$PY" "$CARRY/torch_reference_step.py" --compile --json "$LOGS/torch_step.json"
    python3 "$CARRY/step-ratios.py" "$LOGS/dgs_step.json" "$LOGS/torch_step.json" > "$LOGS/step-ratios.txt" 2>&1 || true
    python3 "$CARRY/step-ratios.py" "$LOGS/dgs_step_fused.json" "$LOGS/torch_step.json" \
      > "$LOGS/step-ratios-fused.txt" 2>&1 || true
  fi
  # Where one ViT-L/14 bf16 DGS step's GPU time goes, kernel by kernel, in both.
  if want profile; then
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    if [ -n "$NCU" ]; then
      part ncu-dgs 120 "$NCU" --csv --print-units base --metrics gpu__time_duration.sum \
        --launch-count 8000 "$CARRY/bin/dgs-cuda" bench step --device cuda --models vit-l14 \
        --dtypes bf16 --methods dgs --warmup 0 --steps 1 --no-phases
      python3 "$CARRY/ncu-summary.py" "$LOGS/ncu-dgs.log" 25 > "$LOGS/profile-dgs.txt" 2>&1
    else
      rows+=("ncu-dgs: NOT RUN (no ncu)")
    fi
    part torch-profile 90 "$PY" "$CARRY/torch_reference_step.py" --models vit-l14 --dtypes bf16 --profile
    grep -v Warning "$LOGS/torch-profile.log" | tail -23 > "$LOGS/profile-torch.txt"
  fi
  # 4. The demo trained and evaluated on the GPU.
  if want demo; then
    part demo-cuda 120 "$CARRY/bin/dgs-cuda" demo --device cuda --out "$CARRY/demo"
    cp "$CARRY/demo/report.txt" "$LOGS/demo-cuda-report.txt" 2>/dev/null || true
  fi
fi

# 5. Kernel benchmarks and the PyTorch kernel reference.
want kernels && part bench 240 env CRITERION_HOME="$LOGS/criterion" "$CARRY/bin/surgery_cuda" --bench
want kernels && part bench-attention 90 env CRITERION_HOME="$LOGS/criterion" "$CARRY/bin/attention_cuda" --bench
if want kernels; then
  python3 "$CARRY/bench-summary.py" "$LOGS/criterion" > "$LOGS/bench-summary.txt" 2>&1 || true
  part torch 120 "$PY" "$CARRY/torch_reference.py" --json "$LOGS/torch.json"
  python3 "$CARRY/kernel-ratios.py" "$LOGS" > "$LOGS/ratios.txt" 2>&1 || true
fi

summary() {
  echo "== kernel bench summary"; cat "$LOGS/bench-summary.txt" 2>/dev/null
  echo "== torch kernels"; grep '^torch' "$LOGS/torch.log" 2>/dev/null
  if [ -f "$LOGS/dgs_step.log" ]; then
    echo "== training step (dgs)"; cat "$LOGS/dgs_step.log"
    echo "== training step (dgs, DGS_CUDA_LAYER=fused)"; cat "$LOGS/dgs_step_fused.log" 2>/dev/null
    echo "== training step (PyTorch)"; grep -v Warning "$LOGS/torch_step.log" 2>/dev/null
    echo "== demo on the GPU"; cat "$LOGS/demo-cuda-report.txt" 2>/dev/null
  fi
  [ -f "$LOGS/profile-dgs.txt" ] && { echo "== profile: dgs ViT-L/14 bf16 DGS step (ncu)"; cat "$LOGS/profile-dgs.txt"; }
  [ -f "$LOGS/profile-torch.txt" ] && { echo "== profile: PyTorch"; cat "$LOGS/profile-torch.txt"; }
  echo "== summary ($(cat "$LOGS/date.txt"); $(grep -m1 -oE 'NVIDIA [A-Z0-9a-z -]+' "$LOGS/nvidia-smi.txt" | head -1); ${SECONDS}s)"
  printf '%s\n' "${rows[@]}"
  cat "$LOGS/ratios.txt" 2>/dev/null
  [ -f "$LOGS/step-ratios.txt" ] && cat "$LOGS/step-ratios.txt"
  [ -f "$LOGS/step-ratios-fused.txt" ] && { echo "== fused layer"; cat "$LOGS/step-ratios-fused.txt"; }
}
summary > "$LOGS/summary.txt" 2>&1
cp "$LOGS/summary.txt" "$OUT/"
cp "$LOGS"/dgs_step.json "$LOGS"/dgs_step_fused.json "$LOGS"/torch_step.json "$OUT/" 2>/dev/null
tar -C "$LOGS" -czf "$OUT/gpu-logs.tar.gz" . 2>/dev/null
cat "$OUT/summary.txt"
exit $fail
