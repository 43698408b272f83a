#!/usr/bin/env bash
# Issue 16 part 2 and the study's open cells: models that stop, then how fast they decode. In parts that each fit
# one device call and bring back what they made, since a device machine can be taken back between two calls (on
# 2026-12-03 it was, and a job chained over calls lost everything it had not written into OUT).
#
#   scripts/gpu_decode.sh PART OUT [DATA]     # DATA: local TinyStories text, default .device/data/tinystories
#
# PART is one of
#   ls-bench   the length suite: the AR base, ar and block_pad@ar fine-tuned from it (seed 0), then bench_sampler
#              on them (the block sampler at several thresholds, against ar and LLaDA's vanilla sampler, batch 1
#              and 16, CUDA graphs, --profile). On one H200 (2026-12-03): 299 s of training then 286 s of
#              benchmark; at eb675a5 321 s of training, and the benchmark, which then profiled every batch, was cut
#              at 575 s profiling the vanilla sampler's last row. It profiles 4 batches per row now
#              (--profile_batches): give it DEADLINE=590 and nothing else in the call. At a062661 the call also ran
#              the A/B of inference_weights first (two rows with --autocast_weights, 37 s; docs/speed.md): 324 s
#              of training, and the deadline (550) cut the table in the vanilla sampler's batch-16 row, whose
#              timed row bench_sampler.py now saves before profiling it.
#   ls-curve   the accuracy-parallelism curve of the block sampler on the length suite: block_pad@ar fine-tuned
#              from the AR base with each of $SEEDS (the base, ar and seed 0 trained first if missing), each on
#              500 held-out prompts at thresholds 0.9 to 0.5, each threshold's exact match against 0.9's on the
#              same prompts with an interval (bench_sampler's "vs first threshold"); batch 1 and 16 for seed 0,
#              batch 1 for the others; no other sampler, no profile. On one H200 (2026-12-03): 343 s of training
#              and 121 s of curve for seed 0; about 110 s and 80 s for each further seed (SEEDS=0,1,2 needs two
#              calls: the second finds seed 0 on the warm machine)
#   ls-slots   continuous batching at batch 16 on 500 held-out prompts, threshold 0.9: bench_sampler's
#              block_slots_graphs (16 rows, each at its own block) and block_slots_compiled_graphs (the same, its
#              pass through torch.compile) beside the block sampler's batches run to their ends, the AR model and
#              the vanilla sampler (its 4 prompts, 16 rows per pass), on the seed-0 models (trained first if
#              missing). On one H200 (2026-12-03, 0658b7d, as ls-refill with the since removed refill_rows beside
#              it): 354 s of training, then 78 s of benchmark; at 26bb19c 267 s of training. At 0354e0b, with
#              BENCH_FLAGS="--batch_sizes=1,16 --samplers=block_slots_compiled_graphs,ar_compiled_graphs,
#              ar_slots_compiled_graphs": 339 s of training, the batch-1 rows in 171 s with their warm-ups, and the
#              deadline (585) cut the AR model's batch-16 compilation
#   ls-shift   block_pad@ar again with DiffuGPT's output shift, from the same AR base (trained here if missing),
#              evaluated on the 500 held-out prompts
#   ts-study   TinyStories: the AR base, ar and block_pad@ar at $SEEDS (default 0), evaluated on 300 stories,
#              judged by ar-s0
#   ts-bench   bench_sampler on the TinyStories seed-0 models (trained first if missing), without --profile. On one
#              H200 at 6e7ae2b: 219-241 s of training; the compiled slots compile a pass per threshold (33-54 s)
#   ts-long    does a longer fine-tune make the model sure of more tokens per pass? block_pad@ar fine-tuned for
#              $LONG_ITERS iterations (default 1500: 6 passes over the data where the study's 500 make 2) from the
#              same AR base in a study directory of its own, beside the study's 500-iteration seed-0 model; then the
#              block sampler's curve (block_graphs, batch 1, 50 stories, thresholds 0.9, 0.5, 0.3, 0.7) of each.
#              The 500-iteration curve runs while the long fine-tune trains: its tokens per pass and perplexity
#              are the point, its tokens/s are not (the GPU is shared)
#              On one H200 at 1b730c8: the study's models 253 s, the long fine-tune 303 s beside them, each curve
#              35-130 s: the long one's ended at the deadline (585)
#   ts-distill block_pad@ar fine-tuned from the same AR base on the AR model's own greedy stories (data/distill.py:
#              ar-s0 continues the first sentences of the first $DISTILL_DOCS training stories, default 10240), in a
#              study directory of its own; then the block sampler's curve at batch 1 (as ts-long) beside the AR
#              model, then the compiled slots at 0.9. The judge is the teacher: its perplexities favour the
#              student's text over the study model's. On one H200 at cfc02e8: the AR models 178 s, distillation
#              84 s, the fine-tune 128 s, the curve and AR 147 s; the deadline (580) cut the compiled slots' warm-up
#   ts-self    self-distillation (dParallel): the study's block_pad@ar-s0 writes its own stories (data/distill.py,
#              the block sampler at 0.9, the first $DISTILL_DOCS training first sentences, default 8192), then is
#              fine-tuned once per student in $SELF_STUDENTS, NAME=TEXT:WEIGHT[:SEED[:STEPS]] each (default
#              "cf0=self:0 cf2=self:2": the stories alone, and dParallel's certainty forcing; seed 0, $SELF_ITERS
#              steps, default 250), TEXT being self (the teacher's stories), mix (those and the real ones
#              DISTILL_FLAGS=--real_docs=N writes) or real (the study's own training text: no distillation).
#              SELF_TEACHER=NAME makes a student of an earlier call the teacher (a second round: its own stories,
#              its students fine-tuned from it; their names must be new). The judge (ar-s0) scores the stories,
#              and DISTILL_FLAGS=--max_judge_ppl=P leaves out those it finds less likely than perplexity P (a
#              warm machine's earlier distillation of the same teacher is reused, whatever the flags). The
#              teacher's curve (block_graphs, batch 1, 50 stories, $SELF_THRESHOLDS, default 0.9 to 0.3, with the
#              AR model's row) runs beside the distillation and training (TEACHER_CURVE=0
#              leaves it out). Then the stages of $SELF_BENCH in its order (default curves,slots): curves, each
#              student's curve, side by side: their tokens per pass and perplexities are the point, not their
#              tokens/s; slots, alone on the GPU, each student's compiled slots at $SLOTS_THRESHOLDS (default
#              0.9) on $SLOTS_PROMPTS stories (default 50), the first student's beside the AR model's rows in
#              $SLOTS_AR (default ar_graphs,ar_compiled_graphs,ar_slots_compiled_graphs: since 2026-12-04 the
#              compiled slots' tokens/s are compared with the compiled AR model at its best; SLOTS_AR= leaves
#              the AR rows out, for students timed after them on the same machine). The judge (ar-s0) is not the
#              teacher here.
#              Restartable: what a warm machine holds is not done again. On one H200 at b1a6de3 and 468142b: the
#              study 211-244 s, the distillation 121 s alone (222 s beside the teacher's curve; 7,257-7,306 of
#              8,192 stories ended), the two students 44-100 s; the students' curves did not finish in one call,
#              and a second call did not find the machine twice (docs/speed.md). With DISTILL_DOCS=4096
#              SELF_ITERS=125 the students are done at 336 s. At 0d4db7f with those and DISTILL_FLAGS=
#              "--max_repetition=0.2 --real_docs=4096", three students: the study 192-209 s, distillation 68-78 s,
#              the students done at 311-351 s; then mix2's compiled slots at two thresholds with the AR model 98 s,
#              two students' curves at 0.9 and 0.8 side by side 108 s, and four more calls sent as each returned
#              found the machine (docs/speed.md). At 6897d9f, three students: the study 229 s, distillation done
#              at 299 s, the students at 392 s; then SLOTS_PROMPTS=200 at two thresholds: 274-280 s for the first
#              student (with the AR row), 145 s for each other. At 0354e0b, two students: done at 391 s; then
#              SLOTS_PROMPTS=200 at two thresholds with SLOTS_AR=ar_compiled_graphs,ar_slots_compiled_graphs 329 s
#              for the first, 112 s for the second. At 73dfd99, three students (one of 250 steps): the study 252 s,
#              distillation done at 326 s, the students at 433-448 s; SLOTS_PROMPTS=200 at two thresholds with
#              SLOTS_AR=ar_slots_compiled_graphs 284 s for the first, 175 s for the second, and the deadline (585)
#              cut the third; each further round (SELF_TEACHER, one student) 72-76 s of distillation, 41-45 s of
#              training and 177-205 s of that bench. At 5363b3e, one student: done at 355 s; a round of two
#              students (--max_judge_ppl) 129 s; SLOTS_PROMPTS=200 at two thresholds with the AR model 264 s, a
#              student without them 96-103 s at two thresholds, 79-95 s at 0.9 alone (docs/speed.md, "Rounds held
#              to round 1's text quality"). At 9f51928 (the GPU tests beside it): the study 239 s, a round-1
#              student done at 394 s, round 2 (one student) 115 s; a round of four students 180 s; SLOTS_PROMPTS=200
#              at 0.9 with SLOTS_AR=ar_slots_compiled_graphs 178 s, a student without them 73-78 s. At 5e3be9e with
#              DISTILL_DOCS=8192 (the GPU tests beside the study): the study 273 s, each distillation 129-152 s, a
#              student 37-85 s; SLOTS_PROMPTS=200 at 0.9 with the AR row 159 s, a student without it 43-68 s.
#              At 78430a6, the same with a study of seed 1 (STUDY_FLAGS below): the study 210 s, each
#              distillation 136-153 s, a student 35-70 s, a student's bench at 0.9 without the AR row 62 s.
#              DEADLINE counts from each run of this script
#   ts-slots   ls-slots on TinyStories: the 200 validation stories' first sentences, the same samplers. On one
#              H200 at 26bb19c with --profile: 219 s of training, and at 575 s the deadline cut the vanilla
#              sampler's row (its table then has no vanilla row); at 6e7ae2b with the compiled slots and the
#              vanilla sampler only, no --profile: 275 s of training (GPU tests beside it), 96 s of benchmark
# Every part starts by running its study's training stages, which skip what is finished: on a warm machine that
# has them (/root/ck outlives a call) it goes straight to its own work, on a fresh one it retrains first. Each
# stage runs under a deadline ($DEADLINE seconds after the start, default 570), and whatever finished is written
# into OUT before it:
#   study-NAME/     study.py --collect: tables, figures, samples (no checkpoints)
#   study-NAME.log, bench_DATASET*.json (written row by row), bench_DATASET*.log
#   timings.txt     the wall seconds at the end of each stage
# Checkpoints go to $STUDIES (default /root/ck): outside the copied tree, they last as long as the machine.
# STUDY_FLAGS: study.py's flags for every study stage, e.g. "--base_flags=--seed=1 --finetune_flags=--seed=1" for a
# study model of another seed (its runs keep their -s0 names; give every call of a lease the same flags).
# Run from the repo root with PYTHONPATH set to it, e.g. in a device call:
#   scripts/gpu_decode.sh ts-study /root/ck/out; tar czf $OUT/out.tar.gz -C /root/ck out
# A CPU rehearsal of the plumbing with tiny models (flags given later override earlier ones; ts-distill also needs
# DISTILL_FLAGS="--max_docs=64 --max_new_tokens=64 --batch_size=16", and a teacher that ends some stories), a few
# minutes a part:
#   STUDY_FLAGS="--tiny --num_samples=4 --base_flags=" BENCH_SAMPLERS=block,ar,llada \
#   BENCH_FLAGS="--n_prompts=2 --batch_sizes=1 --max_new_tokens=16 --llada_gen_length=16 --llada_steps=16 \
#   --llada_block_length=16" STUDIES=/tmp/decode scripts/gpu_decode.sh ts-bench /tmp/decode/out ../shared/data/tinystories
set -uo pipefail
usage="usage: scripts/gpu_decode.sh ls-bench|ls-curve|ls-slots|ls-shift|ts-study|ts-bench|ts-long|ts-distill|ts-self|ts-slots OUT [DATA]"
PART=${1:?$usage}
OUT=${2:?$usage}
DATA=${3:-.device/data/tinystories}
STUDIES=${STUDIES:-/root/ck}
SEEDS=${SEEDS:-0}
DEADLINE=${DEADLINE:-570}
STUDY_FLAGS=${STUDY_FLAGS:-}
BENCH_SAMPLERS=${BENCH_SAMPLERS:-block_graphs,ar_graphs,llada_graphs}
BENCH_FLAGS=${BENCH_FLAGS:-}
DISTILL_FLAGS=${DISTILL_FLAGS:-}
SELF_STUDENTS=${SELF_STUDENTS:-cf0=self:0 cf2=self:2}  # ts-self: its students, NAME=TEXT:CERTAINTY_WEIGHT
SELF_THRESHOLDS=${SELF_THRESHOLDS:-0.9,0.7,0.5,0.3}  # ts-self: the students' curves
SELF_BENCH=${SELF_BENCH-curves,slots}  # ts-self: what is measured of the students, in this order
SELF_ITERS=${SELF_ITERS:-250}  # ts-self: each student's fine-tuning steps
SELF_FLAGS=${SELF_FLAGS:-}  # ts-self: train.py's flags (config files too) for the students
case $PART in ts-*) [ -d "$DATA" ] || { echo "error: no local TinyStories text at $DATA" >&2; exit 1; };; esac
mkdir -p "$OUT"
stamp() { echo "$1 $SECONDS s" | tee -a "$OUT/timings.txt"; }
left() { echo $(( DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1 )); }  # seconds to the deadline, at least 1

# study.py's flags per dataset, then the caller's; the canvas cap of each (the longest answers fit under it)
declare -A FLAGS=(
  [lengthtask]="--base_flags=--max_iters=3000"
  [tinystories]="--data_source=$DATA --num_samples=300 --eval_flags=--judge=$STUDIES/tinystories/runs/ar-s0"
)
declare -A CAP=([lengthtask]=320 [tinystories]=512)
# continuous batching at batch 16 (ls-slots, ts-slots): the slots, block and AR, beside batches run to their ends
SLOTS_FLAGS="--batch_sizes=16 --thresholds=0.9 \
  --samplers=block_graphs,block_slots_graphs,block_slots_compiled_graphs,ar_graphs,ar_compiled_graphs,\
ar_slots_graphs,ar_slots_compiled_graphs,llada_graphs"

study() {  # dataset name recipes stages seeds [flags...]: study.py until the deadline; collects what it has
  local dataset=$1 name=$2 recipes=$3 stages=$4 seeds=$5
  timeout -s INT "$(left)" python study.py --dataset="$dataset" --study_dir="$STUDIES/$name" --recipes="$recipes" \
    --stage="$stages" --seeds="$seeds" --samplers=block --jobs=4 --collect="$OUT/study-$name" ${FLAGS[$dataset]} \
    $STUDY_FLAGS "${@:6}" >> "$OUT/study-$name.log" 2>&1
  stamp "study $name $stages (exit $?)"
}

share() {  # new from dir...: a study directory of its own that uses study `from`'s dirs (linked, not copied)
  mkdir -p "$STUDIES/$1"
  for d in "${@:3}"; do ln -sfn "$STUDIES/$2/$d" "$STUDIES/$1/$d"; done
}

bench() {  # dataset name [flags...]: the decoding table of its seed-0 models into OUT/name.*, until the deadline
  local runs=$STUDIES/$1/runs cap=${CAP[$1]} name=$2
  timeout -s INT "$(left)" python bench_sampler.py --init_from="$runs/block_pad@ar-s0" --ar_init_from="$runs/ar-s0" \
    --data_dir="$STUDIES/$1/data/$1" --n_prompts=16 --llada_prompts=4 --batch_sizes=1,16 \
    --samplers="$BENCH_SAMPLERS" --thresholds=0.9,0.7,0.5 --max_new_tokens="$cap" --llada_gen_length="$cap" \
    --llada_steps="$cap" --llada_block_length=32 --out="$OUT/$name.json" "${@:3}" $BENCH_FLAGS \
    > "$OUT/$name.log" 2>&1
  stamp "bench $name (exit $?)"
}

case $PART in
  ls-bench)
    study lengthtask lengthtask ar,block_pad@ar base,finetune 0
    bench lengthtask bench_lengthtask --profile
    ;;
  ls-curve)
    study lengthtask lengthtask ar,block_pad@ar base,finetune 0
    study lengthtask lengthtask block_pad@ar finetune "$SEEDS"
    for seed in ${SEEDS//,/ }; do
      bench lengthtask "curve_lengthtask-s$seed" --n_prompts=500 --samplers=block_graphs \
        --thresholds=0.9,0.8,0.7,0.6,0.5 --init_from="$STUDIES/lengthtask/runs/block_pad@ar-s$seed" \
        $([ "$seed" = 0 ] || echo --batch_sizes=1)
    done
    ;;
  ls-slots)  # continuous batching at batch 16 on the 500 prompts, against batches run to their ends, the AR
    # model, and the vanilla sampler's batch 16 (4 prompts, 16 rows per pass)
    study lengthtask lengthtask ar,block_pad@ar base,finetune 0
    bench lengthtask slots_lengthtask $SLOTS_FLAGS --n_prompts=500
    ;;
  ls-shift)  # a study directory of its own that shares the AR base and the prepared data of the length suite's
    study lengthtask lengthtask ar base 0
    share lengthtask-shift lengthtask base data
    study lengthtask lengthtask-shift block_pad@ar base,finetune,eval,report 0 --finetune_flags=--output_shift=True
    ;;
  ts-study)
    study tinystories tinystories ar,block_pad@ar base,finetune,eval,report "$SEEDS"
    ;;
  ts-bench)
    study tinystories tinystories ar,block_pad@ar base,finetune 0
    bench tinystories bench_tinystories
    ;;
  ts-long)  # the long fine-tune in the background, from the study's AR base and data (linked, as ls-shift)
    study tinystories tinystories ar base 0
    share tinystories-long tinystories base data
    study tinystories tinystories-long block_pad@ar finetune 0 --finetune_flags=--max_iters="${LONG_ITERS:-1500}" &
    study tinystories tinystories ar,block_pad@ar finetune 0
    curve="--samplers=block_graphs --batch_sizes=1 --n_prompts=50 --thresholds=0.9,0.5,0.3,0.7"
    bench tinystories curve_tinystories $curve
    wait
    bench tinystories curve_tinystories-long $curve \
      --init_from="$STUDIES/tinystories-long/runs/block_pad@ar-s0"
    ;;
  ts-distill)
    study tinystories tinystories ar base,finetune 0
    timeout -s INT "$(left)" python data/distill.py --teacher="$STUDIES/tinystories/runs/ar-s0" --batch_size=1024 \
      --max_docs="${DISTILL_DOCS:-10240}" --data_dir="$STUDIES/tinystories/data/tinystories" \
      --out_dir="$STUDIES/distilled" $DISTILL_FLAGS > "$OUT/distill.log" 2>&1
    stamp "distill (exit $?)"
    share tinystories-distill tinystories base  # its own data: the teacher's stories
    study tinystories tinystories-distill block_pad@ar finetune 0 --data_source="$STUDIES/distilled"
    student="--init_from=$STUDIES/tinystories-distill/runs/block_pad@ar-s0"
    bench tinystories curve_tinystories-distill --samplers=block_graphs,ar_graphs --batch_sizes=1 --n_prompts=50 \
      --thresholds=0.9,0.5,0.3,0.7 "$student"
    bench tinystories slots_tinystories-distill --samplers=block_slots_compiled_graphs --batch_sizes=1 \
      --n_prompts=50 --thresholds=0.9 "$student"
    ;;
  ts-self)  # self-distillation and certainty forcing (dParallel): the study's model writes its own stories, is
    # fine-tuned on them (or on real text, or both) with each student's certainty weight, and each curve runs
    # beside the others
    students=() names=()
    for spec in $SELF_STUDENTS; do  # checked before any training, not after it
      names+=("${spec%%=*}"); text=${spec#*=}; text=${text%%:*}
      case $text in self|mix|real) ;; *) echo "error: $spec: a student's TEXT is self, mix or real" >&2; exit 1;; esac
    done
    for stage in ${SELF_BENCH//,/ }; do
      case $stage in curves|slots) ;; *) echo "error: SELF_BENCH takes curves and slots, got $stage" >&2; exit 1;; esac
    done
    study tinystories tinystories ar,block_pad@ar base,finetune 0
    teacher=$STUDIES/tinystories/runs/block_pad@ar-s0 distilled=$STUDIES/self-distilled self_only=$STUDIES/self-only
    if [ -n "${SELF_TEACHER:-}" ]; then  # a second round: an earlier student writes the stories
      teacher=$STUDIES/tinystories-self/runs/$SELF_TEACHER
      distilled=$distilled-$SELF_TEACHER self_only=$self_only-$SELF_TEACHER
      [ -f "$teacher/latest.json" ] || { echo "error: SELF_TEACHER: no trained student at $teacher" >&2; exit 1; }
    fi
    done_before() { grep -q "^$1 (exit 0)" "$OUT/timings.txt" 2>/dev/null; }  # a stage a warm machine finished
    curve="--samplers=block_graphs --batch_sizes=1 --n_prompts=50 --thresholds=$SELF_THRESHOLDS"
    # the teacher's curve needs only the teacher: it runs beside the distillation and the students' training
    teacher_curve=curve_tinystories-teacher${SELF_TEACHER:+-$SELF_TEACHER}
    [ "${TEACHER_CURVE:-1}" = 0 ] || done_before "bench $teacher_curve" ||
      bench tinystories "$teacher_curve" $curve --samplers=block_graphs,ar_graphs --init_from="$teacher" &
    student() {  # name text weight seed steps: fine-tune the teacher on that text with that certainty weight
      local run=$STUDIES/tinystories-self/runs/$1
      declare -A source=([self]=$self_only [mix]=$distilled [real]=$DATA)
      timeout -s INT "$(left)" python train.py config/study/tinystories_sft.py config/recipes/block_pad.py \
        $SELF_FLAGS --seed="$4" --init_from="$teacher" --data_source="${source[$2]}" \
        --data_dir="$STUDIES/tinystories-self/data-$1" --out_dir="$run" --max_iters="$5" \
        --certainty_weight="$3" $([ -f "$run/latest.json" ] && echo --resume) >> "$OUT/train-$1.log" 2>&1
      stamp "student $1 (exit $?)"
    }
    train_students() {  # TEXT...: start the students on those texts that are not done, in the background
      local spec name text weight seed steps
      for spec in $SELF_STUDENTS; do
        name=${spec%%=*}; IFS=: read -r text weight seed steps <<< "${spec#*=}"
        [[ " $* " == *" $text "* ]] || continue
        done_before "student $name" ||
          { student "$name" "$text" "$weight" "${seed:-0}" "${steps:-$SELF_ITERS}" & students+=($!); }
      done
    }
    train_students real  # (their text is there already: they train beside the distillation)
    [ -f "$distilled/train.txt.gz" ] || {
      timeout -s INT "$(left)" python data/distill.py --teacher="$teacher" --threshold=0.9 --batch_size=1024 \
        --judge="$STUDIES/tinystories/runs/ar-s0" \
        --max_docs="${DISTILL_DOCS:-8192}" --data_dir="$STUDIES/tinystories/data/tinystories" \
        --out_dir="$distilled" $DISTILL_FLAGS > "$OUT/self-distill${SELF_TEACHER:+-$SELF_TEACHER}.log" 2>&1
      stamp "self-distill${SELF_TEACHER:+ from $SELF_TEACHER} (exit $?)"; }
    mkdir -p "$self_only"  # the teacher's stories without the real ones (--real_docs writes into extra/)
    ln -sfn "$distilled/train.txt.gz" "$self_only/train.txt.gz"
    ln -sfn "$distilled/valid.txt.gz" "$self_only/valid.txt.gz"
    train_students self mix  # side by side on the one GPU; each its own prepared copy of its text
    [ ${#students[@]} -eq 0 ] || wait "${students[@]}"  # (wait with no pid would wait for the teacher's curve too)
    for stage in ${SELF_BENCH//,/ }; do
      case $stage in
        curves)  # side by side: their tokens per pass and perplexities are the point, not their tokens/s
          for name in "${names[@]}"; do
            bench tinystories "curve_tinystories-$name" $curve --init_from="$STUDIES/tinystories-self/runs/$name" &
          done
          wait;;
        slots)  # alone on the GPU, one after another: the compiled slots' tokens/s at $SLOTS_THRESHOLDS, and
          # the AR model's rows beside the first student's
          ar=${SLOTS_AR-ar_graphs,ar_compiled_graphs,ar_slots_compiled_graphs}  # (SLOTS_AR= : no AR rows)
          samplers=block_slots_compiled_graphs${ar:+,$ar}
          for name in "${names[@]}"; do
            bench tinystories "slots_tinystories-$name" --samplers="$samplers" --batch_sizes=1 \
              --n_prompts="${SLOTS_PROMPTS:-50}" --thresholds="${SLOTS_THRESHOLDS:-0.9}" \
              --init_from="$STUDIES/tinystories-self/runs/$name"
            samplers=block_slots_compiled_graphs
          done;;
      esac
    done
    ;;
  ts-slots)  # as ls-slots, on every validation story
    study tinystories tinystories ar,block_pad@ar base,finetune 0
    bench tinystories slots_tinystories $SLOTS_FLAGS --n_prompts=200
    ;;
  *) echo "error: unknown part '$PART'; $usage" >&2; exit 2 ;;
esac
