#!/usr/bin/env bash
# Issue 16 part 2 and issue 17's last open cell, as one long GPU job: models that stop, then how fast they decode.
#
#   scripts/gpu_decode.sh OUT [DATA]     # DATA: local TinyStories text, default .device/data/tinystories
#
# 1. Two studies side by side (study.py), each: the AR base, then ar and block_pad@ar fine-tuned from it, and their
#    evaluations on the held-out prompts. The length suite at seed 0 (block_pad@ar met issue 17's targets there
#    over 3 seeds: docs/study.md), then block_pad@ar with DiffuGPT's output shift from the same base (a study
#    directory of its own, sharing base/ and data/); TinyStories at seeds 0, 1, 2, judged by ar-s0.
# 2. Then, one at a time (a benchmark shares the GPU with nothing), bench_sampler.py on each dataset: the block
#    sampler of block_pad@ar-s0 at several thresholds, against ar-s0 and against LLaDA's vanilla sampler on the
#    same model, at batch 1 and 16, CUDA graphs, --profile (where a pass's time goes).
#
# Run from the repo root with PYTHONPATH set to it. It outlasts one device call (about 20 minutes, estimated):
# start it with scripts/device_job.sh and bring OUT back after each wait (e.g. tar it into $OUT). Writes into OUT:
#   study-lengthtask/, study-lengthtask-shift/, study-tinystories/   study.py --collect: tables, figures,
#                                            samples (no checkpoints)
#   bench_<dataset>.json, bench_<dataset>.log   the decoding tables (bench_sampler writes its JSON row by row)
#   timings.txt                              wall seconds at the end of each stage
# Checkpoints go to $STUDIES (default /root/ck): outside the copied tree, they last as long as the machine.
# A CPU rehearsal of the plumbing, tiny models, in about 3 minutes (flags given later override earlier ones):
#   STUDY_FLAGS="--tiny --num_samples=4 --base_flags=" BENCH_SAMPLERS=block,ar,llada \
#   BENCH_FLAGS="--n_prompts=2 --batch_sizes=1 --max_new_tokens=16 --llada_gen_length=16 --llada_steps=16 \
#   --llada_block_length=16" \
#   STUDIES=/tmp/decode scripts/gpu_decode.sh /tmp/decode/out ../shared/data/tinystories
set -uo pipefail
OUT=${1:?usage: scripts/gpu_decode.sh OUT [DATA]}
DATA=${2:-.device/data/tinystories}
STUDIES=${STUDIES:-/root/ck}
STUDY_FLAGS=${STUDY_FLAGS:-}
BENCH_SAMPLERS=${BENCH_SAMPLERS:-block_graphs,ar_graphs,llada_graphs}
BENCH_FLAGS=${BENCH_FLAGS:-}
[ -d "$DATA" ] || { echo "error: no local TinyStories text at $DATA"; exit 1; }
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/timings.txt"; }

# study.py's flags per dataset, then the caller's; the canvas cap of each (the longest answers fit under it)
declare -A FLAGS=(
  [lengthtask]="--base_flags=--max_iters=3000 --seeds=0"
  [tinystories]="--data_source=$DATA --seeds=0,1,2 --num_samples=300 --eval_flags=--judge=$STUDIES/tinystories/runs/ar-s0"
)
declare -A CAP=([lengthtask]=320 [tinystories]=512)

study() {  # dataset [name recipes flags...]: every stage; its small results go into OUT even if a stage fails
  local name=${2:-$1} recipes=${3:-ar,block_pad@ar}
  python study.py --dataset="$1" --study_dir="$STUDIES/$name" --recipes="$recipes" --samplers=block --jobs=4 \
    --collect="$OUT/study-$name" ${FLAGS[$1]} $STUDY_FLAGS "${@:4}" > "$OUT/study-$name.log" 2>&1
  stamp "study $name (exit $?)"
}

shifted() {  # the length suite's block_pad@ar again, with output_shift, from the same AR base
  mkdir -p "$STUDIES/lengthtask-shift"
  for d in base data; do ln -sfn "$STUDIES/lengthtask/$d" "$STUDIES/lengthtask-shift/$d"; done
  study lengthtask lengthtask-shift block_pad@ar --finetune_flags=--output_shift=True
}

bench() {  # dataset: the decoding table of its seed-0 models
  local runs=$STUDIES/$1/runs cap=${CAP[$1]}
  python bench_sampler.py --init_from="$runs/block_pad@ar-s0" --ar_init_from="$runs/ar-s0" \
    --data_dir="$STUDIES/$1/data/$1" --n_prompts=16 --llada_prompts=4 --batch_sizes=1,16 \
    --samplers="$BENCH_SAMPLERS" --thresholds=0.9,0.7,0.5 --max_new_tokens="$cap" --llada_gen_length="$cap" \
    --llada_steps="$cap" --llada_block_length=32 --profile --out="$OUT/bench_$1.json" $BENCH_FLAGS \
    > "$OUT/bench_$1.log" 2>&1
  stamp "bench $1 (exit $?)"
}

{ study lengthtask; shifted; } &
study tinystories &
wait
bench lengthtask
bench tinystories
