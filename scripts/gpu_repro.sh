#!/usr/bin/env bash
# Issue 16, parts 4 and 3, in one GPU call: is the README's validation NLL bound of the tiny pretraining run (3.75
# at step 2000, H100, earlier code; 3.875 at HEAD on an H200) a regression or noise? Two seeds of it side by side,
# and the README's quick start (reproduce.py) with two seeds, all on the local TinyStories text. Then the decoding
# table with honest graphed baselines: the quick-start model against an AR model trained beside it.
#
#   scripts/gpu_repro.sh OUT [DATA]      # DATA: local TinyStories text, default .device/data/tinystories
#
# Run from the repo root with PYTHONPATH set to it. Writes into OUT:
#   tiny_pretrain_seed<S>/log.jsonl, tiny_pretrain_seed<S>.log   python train.py config/tiny_pretrain.py --seed=S
#   reproduce_seed<S>.log, reproduce/seed<S>/...                   python reproduce.py --seeds=S (PASS/FAIL lines;
#                                                                  numbers.json, the runs' logs and eval_eos output)
#   ar1000/, ar1000.log                                            the AR baseline (config/tiny.py, recipe ar)
#   bench_sampler.json, bench_sampler.log                          the decoding table (block, LLaDA, AR; graphs)
#   summary.md                                                     val NLL at every evaluation, per seed, the
#                                                                  decoding table and the PASS/FAIL lines
# Budget: about 5-6 minutes on one H200, estimated (the five trainings share the GPU, each alone 1-2.5 minutes;
# then the decoding table, about a minute).
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
# issue 16 part 3: the autoregressive baseline the decoding table needs (the quick-start model, sample attention,
# is the diffusion side: reproduce/seed1337/train)
timeout 560 python train.py config/tiny.py --recipe=ar --attention_scope=row --max_iters=1000 --data_source="$DATA" \
  --out_dir="$OUT/ar1000" > "$OUT/ar1000.log" 2>&1 &
wait
echo "trainings done $(( $(date +%s) - T0 )) s"
# the decoding table, graphed samplers recorded untimed and then timed replaying only (bench_sampler.py)
timeout 300 python bench_sampler.py --init_from "$OUT/reproduce/seed1337/train" --ar_init_from "$OUT/ar1000" \
  --n_prompts 16 --llada_prompts 2 --batch_sizes 1,16 --block_size 32 --llada_block_length 32 \
  --samplers block_graphs,llada_graphs,ar_graphs --thresholds 0.9,0.5,0.3 --max_new_tokens 512 \
  --llada_gen_length 512 --llada_steps 512 --out "$OUT/bench_sampler.json" > "$OUT/bench_sampler.log" 2>&1
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
table = out / "bench_sampler.json"
print("\nbench_sampler.py (TinyStories, quick-start model vs ar1000):\n" +
      (json.loads(table.read_text())["table"] if table.exists() else "(no table: see bench_sampler.log)"))
for s in seeds:
    log = out / f"reproduce_seed{s}.log"
    print(f"\nreproduce.py --seeds={s}:\n" + (log.read_text().strip() if log.exists() else "(no log)"))
EOF
echo "done $(( $(date +%s) - T0 )) s"
