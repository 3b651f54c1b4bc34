#!/usr/bin/env bash
# Time `dgs demo` end to end (release build; data generation, two trainings, evaluation,
# charts) against the 2-minute target, and print the ratio. Usage: scripts/time-demo.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)/dgs-demo}
cargo build --release --quiet
start=$(date +%s.%N)
./target/release/dgs demo --out "$out" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
end=$(date +%s.%N)
secs=$(python3 -c "print(f'{$end - $start:.1f}')")
tail -n 14 "$out.log"
echo
echo "dgs demo: ${secs} s on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs));" \
  "target < 120 s: ratio $(python3 -c "print(f'{$secs / 120:.2f}')") of the budget"
