#!/usr/bin/env bash
# The one script to run on a GPU machine (H100/H200), from the repository root, after
# scripts/build-gpu-bundle.sh has filled .carry/ on the build machine (see docs/gpu.md):
#   1. every test binary (built with DGS_GPU_TESTS=1: the CUDA cases run against the CPU
#      reference in f32/f16/bf16),
#   2. `dgs self-check --device cuda`,
#   3. the CUDA benchmarks (criterion),
#   4. the PyTorch reference timings,
#   5. with a --train bundle: `dgs bench step` (ViT-B/32 and ViT-L/14, batch 32, f32 and bf16)
#      and the official PyTorch training step on the same sizes, then their ratios,
# then a short table. Logs go to $OUT (default ./gpu-out).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
CARRY=$(mktemp -d)
trap 'rm -rf "$CARRY"' EXIT
tar -C "$CARRY" -xJf "$HERE/bundle.tar.xz" || { echo "cannot unpack $HERE/bundle.tar.xz" >&2; exit 2; }
cp "$HERE"/*.py "$CARRY/"
PY=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
[ -x "$PY" ] || PY=python3

date -u > "$OUT/date.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

declare -a rows=()
fail=0
for t in "$CARRY"/tests/*; do
  name=$(basename "$t")
  if "$t" > "$OUT/test-$name.log" 2>&1; then st=ok; else st=FAILED; fail=1; fi
  line=$(grep -E '^test result:' "$OUT/test-$name.log" | tail -1)
  rows+=("test $name: $st — ${line#test result: }")
done

if "$CARRY/bin/dgs" self-check --device cuda > "$OUT/self-check-cuda.log" 2>&1; then st=ok; else st=FAILED; fail=1; fi
rows+=("dgs self-check --device cuda: $st — $(grep -E 'passed, [0-9]+ failed' "$OUT/self-check-cuda.log" | tail -1)")

CRITERION_HOME="$OUT/criterion" timeout 420 "$CARRY/bin/surgery_cuda" --bench > "$OUT/bench.log" 2>&1 || { rows+=("benchmarks: FAILED (see bench.log)"); fail=1; }
python3 "$CARRY/bench-summary.py" "$OUT/criterion" > "$OUT/bench-summary.txt" 2>&1 || true

timeout 300 "$PY" "$CARRY/torch_reference.py" --json "$OUT/torch.json" > "$OUT/torch.log" 2>&1 || rows+=("torch reference: FAILED (see torch.log)")

python3 - "$OUT" <<'PY' > "$OUT/ratios.txt" 2>&1 || true
import json, os, sys
out = sys.argv[1]
def crit(group, fn):
    p = os.path.join(out, "criterion", group.replace("/", "_"), fn, "new", "estimates.json")
    if not os.path.exists(p):
        # criterion keeps the group id with '/' replaced
        for root, _, files in os.walk(os.path.join(out, "criterion")):
            if root.endswith(os.path.join(fn, "new")) and "benchmark.json" in files:
                meta = json.load(open(os.path.join(root, "benchmark.json")))
                if meta["group_id"] == group:
                    return json.load(open(os.path.join(root, "estimates.json")))["mean"]["point_estimate"] / 1e3
        return None
    return json.load(open(p))["mean"]["point_estimate"] / 1e3
torch = json.load(open(os.path.join(out, "torch.json"))) if os.path.exists(os.path.join(out, "torch.json")) else {}
print(f"{'check':<44} {'value':>10}  target")
for dt in ("f32", "f16", "bf16"):
    g = f"cuda_dgs_rows/{dt}/32x768"
    fused, empty = crit(g, "fused"), crit(g, "empty_kernel")
    if fused and empty:
        print(f"{'rows 32x768 '+dt+': fused / empty launch':<44} {fused/empty:10.2f}  <= 1.5")
    t = torch.get("rows", {}).get(dt, {}).get("32x768")
    if fused and t:
        print(f"{'rows 32x768 '+dt+': torch eager / fused':<44} {t/fused:10.2f}  >= 5")
    g = f"cuda_dgs_rows/{dt}/65536x768"
    f2, c2 = crit(g, "fused"), crit(g, "d2d_copy")
    if f2 and c2:
        print(f"{'rows 65536x768 '+dt+': copy / fused (bw fraction)':<44} {c2/f2:10.2f}  >= 0.85")
for op in ("gram", "combine"):
    for dt, key in (("f32", "K4x50M"), ("f16", "K4x100M"), ("bf16", "K4x100M")):
        g = f"cuda_{op}/{dt}/{key}"
        f, c = crit(g, "fused"), crit(g, "d2d_copy")
        if f and c:
            print(f"{op+' '+dt+' '+key+': copy / fused':<44} {c/f:10.2f}  >= 0.85")
        t = torch.get(op, {}).get(dt, {}).get(key)
        if f and t:
            print(f"{op+' '+dt+' '+key+': torch / fused':<44} {t/f:10.2f}")
g = "cuda_pcgrad/f16/K4x100M"
f, c = crit(g, "fused"), crit(g, "d2d_copy")
if f and c:
    print(f"{'pcgrad f16 4x100M: copy / fused':<44} {c/f:10.2f}  >= 0.80")
t = torch.get("pcgrad", {}).get("f16", {}).get("K4x100M")
if f and t:
    print(f"{'pcgrad f16 4x100M: torch reference / fused':<44} {t/f:10.2f}  >= 10")
PY

if [ -x "$CARRY/bin/dgs-cuda" ]; then
  timeout 300 "$CARRY/bin/dgs-cuda" bench step --device cuda --json "$OUT/dgs_step.json" \
    > "$OUT/dgs_step.log" 2>&1 || { rows+=("dgs bench step: FAILED (see dgs_step.log)"); fail=1; }
  timeout 300 "$PY" "$CARRY/torch_reference_step.py" --json "$OUT/torch_step.json" \
    > "$OUT/torch_step.log" 2>&1 || rows+=("torch reference step: FAILED (see torch_step.log)")
  python3 "$CARRY/step-ratios.py" "$OUT/dgs_step.json" "$OUT/torch_step.json" > "$OUT/step-ratios.txt" 2>&1 || true
fi

echo "== bench summary"; cat "$OUT/bench-summary.txt"
if [ -f "$OUT/dgs_step.log" ]; then
  echo "== training step (dgs)"; cat "$OUT/dgs_step.log"
  echo "== training step (PyTorch)"; cat "$OUT/torch_step.log"
fi
echo "== torch"; grep '^torch' "$OUT/torch.log" || tail -5 "$OUT/torch.log"
echo "== summary ($(cat "$OUT/date.txt"); $(grep -m1 -oE 'NVIDIA [A-Z0-9a-z -]+' "$OUT/nvidia-smi.txt" | head -1))"
printf '%s\n' "${rows[@]}"
cat "$OUT/ratios.txt"
[ -f "$OUT/step-ratios.txt" ] && cat "$OUT/step-ratios.txt"
exit $fail
