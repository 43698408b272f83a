#!/usr/bin/env bash
# Issue 16, part 1, in one GPU call: our training step against nanoGPT's bench (causal and bidirectional), the
# profile of where our step's time goes, every speed lever of training.loss_function and bench.py (tokens/s and
# peak memory each), and a short same-seed training per lever, which must give the plain path's validation NLL.
#
#   scripts/gpu_speed.sh OUT [bench] [train]      # both stages by default; run from the repo root
#   (with neither, e.g. `scripts/gpu_speed.sh OUT summary`, it only rebuilds the summary of OUT)
#
# Needs nanoGPT's bench.py, model.py and configurator.py in .device/nanogpt/ (ignored by git; carry it), and
# PYTHONPATH set to the repo root. Writes into OUT:
#   nanogpt_causal.log, nanogpt_bidirectional.log    nanoGPT's own output ("time per iteration: ... ms")
#   bench_<variant>.json, bench_<variant>.log        one bench.py result per variant (tokens/s, MFU, peak memory,
#                                                    and for the profiled ones the kernel profile)
#   train_<gather>/log.jsonl, train_<gather>.log     the same-seed trainings (length suite, gpt2 preset, 200 steps)
#   summary.json, summary.md                         every number above side by side, and the ratios
#   timings.txt                                      wall seconds of each stage
# Budget: the first run (2026-12-02, H200) spent 372 s on the compile wave alone, with seven variants, among them
# max-autotune, which was dropped since (run it alone: --compile_mode=max-autotune-no-cudagraphs); each timed run
# then took about 25 s. The bench stage alone took 208-235 s on 2026-12-03 (H200) with three variants, the two
# below and one since removed. Run it into a folder outside $OUT (it writes more files than a device call brings
# back) and copy summary.md, summary.json and timings.txt into $OUT.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_speed.sh OUT [bench] [train]}
shift
STAGES=${*:-bench train}
mkdir -p "$OUT"
NANOGPT=.device/nanogpt
STEPS="--steps=15 --warmup=5"
GPT2="config/gpt2.py --batch_size=32 --gradient_accumulation_steps=1"
# name -> bench.py flags: the plain step and the one lever that paid
# (measured and left out since, docs/speed.md: dense, 1.04x nanoGPT; batch 16 x 2 accumulation; on 2026-12-03,
# batch 64, max-autotune, dense under CUDA graphs, q/k/v and SwiGLU's two inputs as one matmul each, and the masks
# drawn on the CPU with their indices, so that the step has no sync: 62.1 ms against indices' 61.6)
declare -A VARIANTS=(
  [plain]="$GPT2 --profile=1"
  [indices]="$GPT2 --loss_gather=indices --profile=1"
)
ORDER="plain indices"
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/timings.txt"; }
T0=$(date +%s)

nanogpt_dirs() {  # nanoGPT as published (causal) and with its one attention call made bidirectional
  mkdir -p "$OUT/nanogpt_bidirectional"
  cp "$NANOGPT"/{bench.py,configurator.py} "$OUT/nanogpt_bidirectional/"
  sed 's/is_causal=True/is_causal=False/' "$NANOGPT/model.py" > "$OUT/nanogpt_bidirectional/model.py"
  grep -q "is_causal=False" "$OUT/nanogpt_bidirectional/model.py" || { echo "error: the is_causal patch did not apply"; exit 1; }
}

run_nanogpt() {  # $1 causal|bidirectional
  local dir=$NANOGPT; [ "$1" = bidirectional ] && dir=$OUT/nanogpt_bidirectional
  # its bench.py as it is, plus one line after it: the peak memory, which it does not print itself
  (cd "$dir" && timeout 150 python -c "import runpy, torch; runpy.run_path('bench.py', run_name='__main__'); \
print(f'peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB')" --batch_size=32 --real_data=False) \
    > "$OUT/nanogpt_$1.log" 2>&1
}

if [[ " $STAGES " == *" train "* ]]; then
  # same seed, same data, each loss_gather: the validation NLL must agree within bf16 noise. Their speed does not
  # matter, so they share the GPU with the compile wave below; the timed runs wait for them.
  python -c "from nanodllm.config import TrainConfig; from nanodllm.training import prepare_data; prepare_data(TrainConfig(dataset='lengthtask'))"
  for gather in mask indices dense; do
    timeout 300 python train.py config/gpt2.py --dataset=lengthtask --batch_size=16 \
      --gradient_accumulation_steps=1 --max_iters=200 --warmup_iters=20 --eval_interval=100 --eval_iters=10 \
      --learning_rate=6e-4 --seed=1337 --loss_gather=$gather --out_dir="$OUT/train_$gather" \
      > "$OUT/train_$gather.log" 2>&1 &
  done
fi

if [[ " $STAGES " == *" bench "* ]]; then
  [ -f "$NANOGPT/bench.py" ] || { echo "error: $NANOGPT/bench.py missing: carry .device/nanogpt"; exit 1; }
  nanogpt_dirs
  # the compile wave: every variant once, untimed, 4 at a time (about 120 GiB at most, with the trainings), so
  # that the timed runs below find Inductor's caches warm (their warm-up steps still exclude any compiling left)
  run_nanogpt causal &  # nanoGPT's compiles too; its timed runs come below
  run_nanogpt bidirectional &
  running=2
  for name in $ORDER; do
    (timeout 300 python bench.py ${VARIANTS[$name]} --steps=1 --warmup=2; echo "exit $?") > "$OUT/compile_$name.log" 2>&1 &
    running=$((running + 1))
    if [ $running -ge 4 ]; then wait -n; running=$((running - 1)); fi
  done
fi
wait  # the compile wave and the trainings
stamp "compile wave and same-seed trainings"

if [[ " $STAGES " == *" bench "* ]]; then
  # the timed runs, one at a time, alone on the GPU
  run_nanogpt causal; stamp "nanogpt causal"
  run_nanogpt bidirectional; stamp "nanogpt bidirectional"
  for name in $ORDER; do
    if grep -q "^exit 124$" "$OUT/compile_$name.log"; then  # its compile run was cut off
      echo "skipped: its compile run did not finish in 300 s" > "$OUT/bench_$name.log"; continue
    fi
    timeout 150 python bench.py ${VARIANTS[$name]} $STEPS --json="$OUT/bench_$name.json" > "$OUT/bench_$name.log" 2>&1
    stamp "bench $name"
  done
fi

python - "$OUT" <<'EOF'
"""Collects every result of the run into summary.json and summary.md."""
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {"nanogpt": {}, "bench": {}, "train": {}}
for kind in ("causal", "bidirectional"):
    log = out / f"nanogpt_{kind}.log"
    text = log.read_text() if log.exists() else ""
    m, mem = re.search(r"time per iteration: ([\d.]+)ms", text), re.search(r"peak memory: ([\d.]+) GiB", text)
    summary["nanogpt"][kind] = dict(ms_per_step=float(m[1]), tokens_per_s=32 * 1024 / float(m[1]) * 1000,
                                    peak_memory_gib=float(mem[1]) if mem else None) if m else None
for path in sorted(out.glob("bench_*.json")):
    summary["bench"][path.stem[6:]] = json.loads(path.read_text().splitlines()[-1])
for path in sorted(out.glob("train_*/log.jsonl")):
    evals = [r for r in map(json.loads, path.read_text().splitlines()) if "val_nll" in r]
    summary["train"][path.parent.name[6:]] = {r["step"]: r["val_nll"] for r in evals}
bidir = (summary["nanogpt"].get("bidirectional") or {}).get("tokens_per_s")
lines = ["| run | tokens/s | vs nanoGPT bidirectional | ms/step | MFU | peak GiB |", "|---|---:|---:|---:|---:|---:|"]
for kind, r in summary["nanogpt"].items():
    if r:
        lines.append(f"| nanoGPT {kind} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / bidir:.2f}x | "
                     f"{r['ms_per_step']:.1f} | - | {r['peak_memory_gib'] or 0:.1f} |")
for name, r in summary["bench"].items():
    ratio = f"{r['tokens_per_s'] / bidir:.2f}x" if bidir else "-"
    lines.append(f"| ours, {name} | {r['tokens_per_s']:,} | {ratio} | {r['ms_per_step']:.1f} | {r['mfu'] or 0:.1%} | "
                 f"{r['peak_memory_gib'] or 0:.1f} |")
for name, r in summary["bench"].items():
    if "profile" in r:
        p = r["profile"]
        lines += ["", f"profile, {name}: per step {p['window_ms_per_step']:.1f} ms window; matmul "
                  f"{p['matmul_ms_per_step']:.1f} ms, attention {p['attention_ms_per_step']:.1f}, other "
                  f"{p['other_ms_per_step']:.1f}, idle {p['idle_ms_per_step']:.1f}; syncs {p['syncs_per_step']}"]
        lines += [f"  {k['ms_per_step']:.2f} ms {k['kind']} {k['name']}" for k in p["top_kernels"]]
        lines += [f"  gap {g['us']:.0f} us after {g['after']} before {g['before']}" for g in p["largest_gaps"]]
if summary["train"]:
    steps = next(iter(summary["train"].values()))
    lines += ["", "| loss_gather | " + " | ".join(f"val NLL @ {s}" for s in steps) + " |",
              "|---|" + "---:|" * len(steps)]
    lines += [f"| {g} | " + " | ".join(f"{v:.4f}" for v in nll.values()) + " |" for g, nll in summary["train"].items()]
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
stamp "done"
