#!/usr/bin/env bash
# The CPU training step of dgs and of PyTorch side by side on this machine: ViT-B/32, f32, batch
# 4, both on the same number of threads, in alternating rounds (a shared machine's noise falls on
# both), then the medians and their ratio.
#
#   scripts/cpu-step-pair.sh [rounds] [threads]     (defaults: 3 rounds, every core)
#
# Needs a release build (`cargo build --release`) and a Python with torch, transformers and peft
# (PYTHON=..., default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${2:-$(nproc)}
PYTHON=${PYTHON:-python3}
OUT=$(mktemp -d)
COMMON=(--models vit-b32 --dtypes f32 --batch 4 --warmup 2 --steps 10)
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS: dgs"
  RAYON_NUM_THREADS=$THREADS target/release/dgs bench step --device cpu "${COMMON[@]}" \
    --methods dgs,plain-lora --json "$OUT/dgs-$r.json" > /dev/null
  echo "round $r/$ROUNDS: torch"
  (cd scripts && OMP_NUM_THREADS=$THREADS "$PYTHON" torch_reference_step.py --device cpu \
    "${COMMON[@]}" --json "$OUT/torch-$r.json" > /dev/null 2>&1)
done
"$PYTHON" - "$OUT" "$ROUNDS" "$THREADS" <<'PY'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rows(side):
    got = {}
    for r in range(1, rounds + 1):
        for row in json.load(open(f"{out}/{side}-{r}.json")):
            if not row.get("compiled"):
                got.setdefault(row["method"], []).append(row)
    return got
dgs, torch = rows("dgs"), rows("torch")
peak = lambda row: row.get("peak_bytes") or row.get("max_allocated")
print(f"CPU step, vit-b32 f32 batch 4, {threads} threads, median of {rounds} rounds")
print(f"{'method':<11} {'dgs ms':>9} {'torch ms':>9} {'speed':>7} {'dgs RSS':>9} {'torch RSS':>10}")
for method in ("dgs", "plain-lora"):
    d = statistics.median(r["step_ms"] for r in dgs[method])
    t = statistics.median(r["step_ms"] for r in torch[method])
    dm = max(peak(r) or 0 for r in dgs[method]) / 2**30
    tm = max(peak(r) or 0 for r in torch[method]) / 2**30
    print(f"{method:<11} {d:9.1f} {t:9.1f} {t / d:6.2f}x {dm:8.2f}G {tm:9.2f}G")
    print(f"{'':<11} rounds: dgs {[round(r['step_ms']) for r in dgs[method]]}, torch {[round(r['step_ms']) for r in torch[method]]}")
PY
