#!/usr/bin/env bash
# Issue 16, part 4, in one GPU call: is the README's validation NLL bound of the tiny pretraining run (3.75 at
# step 2000, H100, earlier code; 3.875 at HEAD on an H200) a regression or noise? Two seeds of it side by side,
# and the README's quick start (reproduce.py) with two seeds, all on the local TinyStories text.
#
#   scripts/gpu_repro.sh OUT [DATA]      # DATA: local TinyStories text, default .device/data/tinystories
#
# Run from the repo root with PYTHONPATH set to it. Writes into OUT:
#   tiny_pretrain_seed<S>/log.jsonl, tiny_pretrain_seed<S>.log   python train.py config/tiny_pretrain.py --seed=S
#   reproduce_seed<S>.log, reproduce/seed<S>/...                   python reproduce.py --seeds=S (PASS/FAIL lines;
#                                                                  numbers.json, the runs' logs and eval_eos output)
#   summary.md                                                     val NLL at every evaluation, per seed, and the
#                                                                  PASS/FAIL lines
# Budget: about 4 minutes on one H200 (the four runs share the GPU; each alone takes 1.5-2.5 minutes).
set -uo pipefail
OUT=${1:?usage: scripts/gpu_repro.sh OUT [DATA]}
DATA=${2:-.device/data/tinystories}
SEEDS="1337 1"
mkdir -p "$OUT"
[ -d "$DATA" ] || { echo "error: no local TinyStories text at $DATA"; exit 1; }
T0=$(date +%s)
# the data once, before the runs that share it (each would otherwise prepare data/tinystories at the same time)
python -c "import sys; from nanodllm.config import load_config; from nanodllm.training import prepare_data; \
prepare_data(load_config(['config/tiny.py', '--data_source=' + sys.argv[1]]))" "$DATA" > "$OUT/prepare.log" 2>&1
for seed in $SEEDS; do
  timeout 560 python train.py config/tiny_pretrain.py --seed=$seed --data_source="$DATA" \
    --out_dir="$OUT/tiny_pretrain_seed$seed" > "$OUT/tiny_pretrain_seed$seed.log" 2>&1 &
  timeout 560 python reproduce.py --seeds=$seed --data_source="$DATA" --out_dir="$OUT/reproduce" \
    > "$OUT/reproduce_seed$seed.log" 2>&1 &
done
wait
python - "$OUT" $SEEDS <<'EOF' | tee "$OUT/summary.md"
"""The validation NLL of each tiny_pretrain seed at every evaluation, and reproduce.py's verdicts."""
import json, sys
from pathlib import Path
out, seeds = Path(sys.argv[1]), sys.argv[2:]
curves = {}
for s in seeds:
    log = out / f"tiny_pretrain_seed{s}" / "log.jsonl"
    if log.exists():
        curves[s] = {r["step"]: r["val_nll"] for r in map(json.loads, log.read_text().splitlines()) if "val_nll" in r}
steps = sorted({step for c in curves.values() for step in c})
print("config/tiny_pretrain.py, validation NLL bound (README: 3.75 at step 2000)\n")
print("| seed | " + " | ".join(str(s) for s in steps) + " |")
print("|---|" + "---:|" * len(steps))
for s, c in curves.items():
    print(f"| {s} | " + " | ".join(f"{c[k]:.3f}" if k in c else "-" for k in steps) + " |")
for s in seeds:
    log = out / f"reproduce_seed{s}.log"
    print(f"\nreproduce.py --seeds={s}:\n" + (log.read_text().strip() if log.exists() else "(no log)"))
EOF
echo "done $(( $(date +%s) - T0 )) s"
