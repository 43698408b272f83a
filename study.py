"""The recipe study in one command: a pretrained base, every recipe fine-tuned from it with several seeds, every
model evaluated with every sampler, then the tables (rates with intervals, overall and per task) and figures.

    python study.py --dataset=lengthtask                                   # the whole study (GPU)
    python study.py --dataset=lengthtask --recipes=dllm_var,ar --seeds=0 --samplers=block
    python study.py --dataset=lengthtask --recipes=ar,block_pad@ar         # block_pad fine-tuned from the AR base
    python study.py --dataset=lengthtask --stage=base                      # one stage at a time, resumable
    python study.py --dataset=lengthtask --stage=finetune --jobs=4         # 4 fine-tunes side by side, one GPU
    python study.py --dataset=tinystories --data_source=DIR                # DIR: see config/study/tinystories_base.py
    python study.py --tiny --dataset=tinystories --data_source=DIR         # the whole pipeline on the CPU, in seconds
    python study.py --study_dir=out/merged --merge a.tar.gz b.tar.gz --stage=report   # several sessions' results

It drives train.py and eval_eos.py through their command lines, as subprocesses (--dry_run prints them).

Stages (--stage, comma-separated; default all four, in this order):
  base      the bases the named recipes start from: the shared masked-diffusion base (config/study/<dataset>_base.py:
            LLaDA's pretraining, t over (0, 1]) for the diffusion recipes, and for ar (or a recipe@ar, below) the
            AR baseline's own causal base (the same file + config/recipes/ar.py). --recipes=block_pad@ar alone
            trains the causal base only.
  finetune  every recipe x seed from its base (--init_from): config/study/<dataset>_sft.py + config/recipes/<recipe>.py,
            --seed=<seed> (the fine-tune's data order and masks; the base is shared by every seed).
            <recipe>@<base> starts a recipe from the other base: block_pad@ar is the block_pad recipe fine-tuned
            from the causal AR base, as DiffuGPT adapts GPT-2 (an AR model has learned the content already; on the
            length suite its weights made block_pad the first recipe to stop at the right place: docs/study.md).
            DiffuGPT also shifts the outputs by one position, so the AR head keeps predicting the next token; by
            default the fine-tune has to learn to predict a masked position's own token instead, and
            --finetune_flags=--output_shift=True keeps DiffuGPT's shift (model.py). Its runs are
            runs/block_pad@ar-s<seed>, its rows "block_pad@ar".
  eval      eval_eos.py for every fine-tuned model x sampler (an ar model: the ar sampler), on the same held-out
            prompts: the first --num_samples of the validation split of the fixed evaluation data.
  report    the tables and figures of every evaluation found in the study directory, whichever session made it.
A stage needs the one before it finished (an error says so); --stage=base,finetune runs both in order.

Resuming: every stage skips what is finished. A training run is finished when the latest checkpoint in its out_dir
is at its max_iters; a run stopped earlier continues from that checkpoint (train.py --resume); a checkpoint of other
settings (say another max_iters) is an error, never silently reused: pick another --study_dir. An evaluation is
finished when its samples.jsonl (eval_eos writes it last) exists and its results.json is of the model's latest
checkpoint, with the settings asked now (--num_samples, --eval_flags, ...): other settings are evaluated again.

Layout of --study_dir (default out/study-<dataset>):
  data/<dataset>[-seed<N>]/             prepared data (the length suite's: one directory per data seed)
  base/diffusion/, base/ar/             the bases' train.py out_dirs (checkpoints, log.jsonl)
  runs/<recipe>-s<seed>/                the fine-tunes' out_dirs
  eval/<recipe>-s<seed>/<sampler>/      eval_eos.py's out_dir: results.json, results.md, samples.jsonl, figures
  logs/<name>.log                       each subprocess's output
  report/study.md, report/study.json    per recipe x sampler: every rate as the mean over seeds with a 95% bootstrap
                                        interval over seeds then prompts (nanodllm/stats.py), overall and per task
  report/rates.png, tasks.png, lengths.png, training.png   rates with intervals; exact length per task; the
                                        generated lengths against the references; validation curves
--collect DIR puts study-<dataset>.tar.gz (every small file above: no checkpoints, no data) and report/'s files in
DIR: at most 7 files, which a device call can bring back. --merge unpacks such archives into --study_dir, so that
sessions that ran different --recipes / --seeds subsets are reported together. Each session trains its own base,
and two trainings of one config differ (GPU training is not bitwise repeatable: one such pair moved a recipe's
exact match from 10% to 2%), so the report's base column names, by checkpoint id, the base each cell's seeds
started from: compare cells of the same base.

On a device whose calls last at most 10 minutes, keep --study_dir outside the copied tree (it survives between
the calls of one warm machine) and chain the stages, one or two per call, each ending with its results:
    timeout -s INT 570 python study.py --study_dir=/root/ck/study --stage=base --jobs=2 --collect=$OUT
An interrupted stage keeps its checkpoints and still collects; the same command resumes it. The next call must
come while the machine is still warm (30 s after a call, here): a later one gets a fresh machine without /root/ck,
and the runs start over (this lost one session's fine-tunes). A process started in a new session (setsid) is not
killed when its call returns and runs on while the machine is held (tested here on a killed process group, and
used on the H200 since): scripts/device_job.sh starts a study so in the first call, and each later call waits for
it and collects, so nothing is cut at a call's end. Each run keeps only
its latest checkpoint (config/study/*.py): at the gpt2 preset one is ~2 GB, and 21 runs with two each filled the
H200 machine's 64 GiB disk.
"""

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import eval_eos
from nanodllm import plots
from nanodllm.checkpoint import CheckpointError, read_config
from nanodllm.config import ConfigError, config_to_dict, load_config
from nanodllm.stats import rate_with_interval
from nanodllm.tasks import Example, score, task_of
from nanodllm.training import prepare_data

ROOT = Path(__file__).resolve().parent
STAGES = ("base", "finetune", "eval", "report")
DATASETS = ("lengthtask", "tinystories")
DIFFUSION_SAMPLERS = ("block", "llada", "length_bound")

# The whole study (no --recipes) runs every recipe from its own base, and these from the other one too: block_pad
# from the AR base is the one recipe that has stopped at the right place (docs/study.md).
FROM_OTHER_BASE = ("block_pad@ar",)

# The length suite is generated from a seed, TrainConfig's data_seed, apart from the training seed: every
# fine-tune seed trains on the same suite, and every model is evaluated on the same held-out prompts.
DATA_SEED = 0

# eval_eos.py's settings per dataset (the README's): blocks of 32 at threshold 0.9; canvases that hold the
# longest reference (the length suite's responses are at most ~300 tokens).
EVAL_FLAGS = {"lengthtask": ["--max_new_tokens", "320", "--block_size", "32", "--threshold", "0.9",
                             "--batch_size", "100", "--eval_iters", "10"],
              "tinystories": ["--max_new_tokens", "512", "--block_size", "32", "--threshold", "0.9",
                              "--batch_size", "100", "--eval_iters", "10"]}
TINY_EVAL_FLAGS = ["--max_new_tokens", "16", "--block_size", "8", "--batch_size", "4", "--eval_iters", "1",
                   "--reveal", "0", "--device", "cpu"]
# Keys of a training config that name places or housekeeping, not settings: they may differ between sessions of
# one run.
PLACES = {"out_dir", "init_from", "data_dir", "data_source", "resume", "overwrite", "device", "keep_checkpoints"}
EVAL_PLACES = {"init_from", "data_dir", "out_dir", "label", "device"}  # eval_eos.py's, likewise
# The rates of the tables: (name in study.json, header), scored per prompt from samples.jsonl.
RATES = [("terminated", "terminated"), ("exact_match", "exact match"), ("exact_length", "exact length"),
         ("first_step_eos_exact", "EOS exact (1st step)")]


class StudyError(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# The plan: which runs and evaluations make up the study

@dataclass
class Run:
    """One train.py run: its name, out_dir, and arguments (config files, then flags)."""
    name: str
    out_dir: Path
    args: list[str]

    def config(self):
        return load_config(self.args)


@dataclass
class Evaluation:
    """One eval_eos.py run: a fine-tuned model and one sampler."""
    run: Run
    sampler: str
    out_dir: Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="lengthtask")
    p.add_argument("--study_dir", default=None, help="default: out/study-<dataset>")
    p.add_argument("--stage", default=",".join(STAGES), help="comma-separated, of %(default)s")
    p.add_argument("--recipes", default=None,
                   help="comma-separated names of config/recipes/*.py, each may end in @ar or @diffusion (the base "
                        "it starts from; default: its own); default: all of them, and "
                        + ",".join(FROM_OTHER_BASE))
    p.add_argument("--seeds", default="0,1,2", help="fine-tune seeds, comma-separated (default: %(default)s)")
    p.add_argument("--samplers", default=",".join(DIFFUSION_SAMPLERS),
                   help="the diffusion models' samplers (ar models always use ar; default: %(default)s)")
    p.add_argument("--num_samples", type=int, default=None, help="held-out prompts (default 500; 4 with --tiny)")
    p.add_argument("--jobs", type=int, default=1, help="training or evaluation subprocesses run side by side")
    p.add_argument("--data_source", default="", help="train.py --data_source (TinyStories: local text files)")
    p.add_argument("--base_flags", default="", help="extra train.py flags for the bases, e.g. '--max_iters=100'")
    p.add_argument("--finetune_flags", default="", help="extra train.py flags for the fine-tunes")
    p.add_argument("--eval_flags", default="", help="extra eval_eos.py flags, e.g. '--judge out/.../runs/ar-s0'")
    p.add_argument("--tiny", action="store_true", help="a tiny model, a few steps, on the CPU (config/study/tiny.py)")
    p.add_argument("--collect", default=None, metavar="DIR", help="copy the small results into DIR at the end")
    p.add_argument("--merge", nargs="+", default=[], metavar="ARCHIVE",
                   help="unpack these --collect archives into --study_dir first")
    p.add_argument("--dry_run", action="store_true", help="print the commands of unfinished work, run nothing")
    args = p.parse_args(argv)
    args.stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    if not args.stages or set(args.stages) - set(STAGES):
        p.error(f"--stage must name some of {STAGES}, got {args.stage!r}")
    available = sorted(f.stem for f in (ROOT / "config" / "recipes").glob("*.py"))
    args.recipes = [r.strip() for r in (args.recipes or ",".join(available + list(FROM_OTHER_BASE))).split(",")
                    if r.strip()]
    wrong = [r for r in args.recipes if recipe_of(r) not in available or base_named(r) not in (None, *BASES)]
    if not args.recipes or wrong:
        p.error(f"--recipes must name some of {available} (config/recipes/*.py), each optionally @ one of {BASES} "
                f"(the base it starts from), got {wrong or args.recipes}")
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if not args.seeds or not args.samplers or set(args.samplers) - set(DIFFUSION_SAMPLERS):
        p.error(f"--seeds needs one seed or more, --samplers some of {DIFFUSION_SAMPLERS}")
    args.num_samples = args.num_samples or (4 if args.tiny else 500)
    if args.num_samples < 1 or args.jobs < 1:
        p.error("--num_samples and --jobs must be >= 1")
    args.study_dir = Path(args.study_dir or f"out/study-{args.dataset}").resolve()
    return args


def data_dir(args) -> Path:
    """Where every run reads its data: one prepared directory per dataset."""
    return args.study_dir / "data" / args.dataset


def train_args(args, stage_config: str, recipe: str | None, out_dir: Path, flags: str, seed: int | None) -> list[str]:
    """train.py's arguments: the stage's config, the recipe's, the tiny overrides, then the flags."""
    files = [ROOT / "config" / "study" / f"{args.dataset}_{stage_config}.py"]
    files += [ROOT / "config" / "recipes" / f"{recipe}.py"] if recipe else []
    files += [ROOT / "config" / "study" / "tiny.py"] if args.tiny else []
    out = [str(f) for f in files] + ([f"--seed={seed}"] if seed is not None else []) + [f"--out_dir={out_dir}"]
    out += [f"--data_source={args.data_source}"] if args.data_source else []
    out += [f"--data_seed={DATA_SEED}"] + shlex.split(flags)
    return out + [f"--data_dir={data_dir(args)}"]


def is_ar(recipe: str) -> bool:
    return load_config([str(ROOT / "config" / "recipes" / f"{recipe}.py")]).recipe == "ar"


# A --recipes entry is <recipe> or <recipe>@<base>: which config/recipes/ file, and which base it starts from.
BASES = ("diffusion", "ar")


def recipe_of(entry: str) -> str:
    return entry.split("@")[0]


def base_named(entry: str) -> str | None:
    return entry.split("@", 1)[1] if "@" in entry else None


def base_of(entry: str) -> str:
    """The base a fine-tune starts from: the one named after '@', else the causal base for the AR recipe and the
    masked-diffusion base for every other."""
    return base_named(entry) or ("ar" if is_ar(recipe_of(entry)) else "diffusion")


def plan(args) -> tuple[list[Run], list[Run], list[Evaluation]]:
    """(bases, fine-tunes, evaluations) of the chosen recipes, seeds and samplers."""
    kinds = sorted({base_of(entry) for entry in args.recipes})
    bases = {kind: Run(f"base-{kind}", args.study_dir / "base" / kind,
                       train_args(args, "base", "ar" if kind == "ar" else None, args.study_dir / "base" / kind,
                                  args.base_flags, None)) for kind in kinds}
    runs, evaluations = [], []
    for entry in args.recipes:
        recipe, base = recipe_of(entry), bases[base_of(entry)]
        for seed in args.seeds:
            name = f"{entry}-s{seed}"
            out_dir = args.study_dir / "runs" / name
            run = Run(name, out_dir, train_args(args, "sft", recipe, out_dir, args.finetune_flags, seed)
                      + [f"--init_from={base.out_dir}"])
            runs.append(run)
            for sampler in ["ar"] if is_ar(recipe) else args.samplers:
                evaluations.append(Evaluation(run, sampler, args.study_dir / "eval" / name / sampler))
    return list(bases.values()), runs, evaluations


# -----------------------------------------------------------------------------
# What is finished

def latest_step(out_dir: Path) -> int | None:
    latest = out_dir / "latest.json"
    return json.loads(latest.read_text())["step"] if latest.is_file() else None


def training_state(run: Run) -> str:
    """'finished', 'resume' (a checkpoint before max_iters) or 'fresh'. A checkpoint trained with other settings
    than the run's is an error."""
    step = latest_step(run.out_dir)
    if step is None:
        return "fresh"
    cfg = run.config()
    saved = read_config(run.out_dir)["train"]
    differing = {k: (saved.get(k), v) for k, v in config_to_dict(cfg).items() if k not in PLACES and saved.get(k) != v}
    if differing:
        what = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise StudyError(f"{run.out_dir} holds a checkpoint trained with other settings ({what}): use another "
                         f"--study_dir, or delete it")
    return "finished" if step >= cfg.max_iters else "resume"


def eval_argv(args, ev: Evaluation, data: Path) -> list[str]:
    """eval_eos.py's arguments for one evaluation: the study's settings, then --eval_flags."""
    extra = TINY_EVAL_FLAGS if args.tiny else EVAL_FLAGS[args.dataset]
    return ["--init_from", str(ev.run.out_dir), "--data", args.dataset, "--data_dir", str(data), "--num_samples",
            str(args.num_samples), "--samplers", ev.sampler, "--out_dir", str(ev.out_dir), "--label", ev.run.name,
            *extra, *shlex.split(args.eval_flags)]


def evaluation_finished(ev: Evaluation, argv: list[str]) -> bool:
    """Its samples.jsonl (written last) and results.json exist, of the model's latest checkpoint, and with the
    settings asked now: every eval_eos.py flag as results.json records it, but those naming places, which differ
    between the sessions that merge their results (a --judge is named by its run's folder)."""
    if not (ev.out_dir / "samples.jsonl").is_file() or not (ev.out_dir / "results.json").is_file():
        return False
    results = json.loads((ev.out_dir / "results.json").read_text())
    try:
        asked = eval_eos.parse_args(argv)
    except SystemExit:  # flags eval_eos.py refuses: not finished; its run will say why, in its log
        return False
    asked = json.loads(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(asked).items()}))

    def setting(key, value):
        return Path(value).name if key == "judge" and value else value
    return (results["model"]["step"] == latest_step(ev.run.out_dir)
            and all(setting(k, results["args"].get(k)) == setting(k, v) for k, v in asked.items()
                    if k not in EVAL_PLACES))


# -----------------------------------------------------------------------------
# Running subprocesses

@dataclass
class Job:
    name: str
    command: list[str]
    log: Path


def launch(job: Job) -> int:
    """Runs one subprocess from the repository root, its output into its log file; returns its exit code."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(f"$ {shlex.join(job.command)}\n")
        log.flush()
        return subprocess.run(job.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode


def run_jobs(jobs: list[Job], n_parallel: int, dry_run: bool):
    """Runs the jobs, n_parallel at a time; a failure lets the others finish, then raises naming its log."""
    if dry_run:
        for job in jobs:
            print(shlex.join(job.command))
        return

    def one(job):
        start = time.time()
        print(f"start {job.name} (log: {job.log})", flush=True)
        code = launch(job)
        print(f"{'done' if code == 0 else f'FAILED ({code})'} {job.name} in {time.time() - start:.0f} s", flush=True)
        return code

    with ThreadPoolExecutor(n_parallel) as pool:
        codes = list(pool.map(one, jobs))
    failed = [job for job, code in zip(jobs, codes) if code != 0]
    if failed:
        tail = "\n".join(failed[0].log.read_text().splitlines()[-15:])
        raise StudyError(f"{len(failed)} of {len(jobs)} failed: {', '.join(j.name for j in failed)}; "
                         f"see {', '.join(str(j.log) for j in failed)}. The end of {failed[0].log}:\n{tail}")


def train(args, runs: list[Run], stage: str):
    """The unfinished runs: resumed from their checkpoint, or started fresh (their data prepared first, once)."""
    todo, jobs = [], []
    for run in runs:
        state = training_state(run)
        print(f"{stage} {run.name}: {state}")
        if state != "finished":
            todo.append(run)
            jobs.append(Job(run.name, [sys.executable, str(ROOT / "train.py"), *run.args]
                            + (["--resume"] if state == "resume" else []), args.study_dir / "logs" / f"{run.name}.log"))
    if not args.dry_run:
        for cfg in {c.data_dir: c for c in (run.config() for run in todo)}.values():
            prepare_data(cfg)  # here, once: runs side by side would otherwise write the same directory together
    run_jobs(jobs, args.jobs, args.dry_run)


def require_finished(args, runs: list[Run], stage: str, needed_by: str):
    unfinished = [run.name for run in runs if training_state(run) != "finished"]
    if unfinished and not args.dry_run:
        raise StudyError(f"{needed_by} needs {', '.join(unfinished)} finished: run --stage={stage} first")


def evaluation_data_dir(args, prepare: bool) -> Path:
    """The held-out prompts every model is evaluated on (with prepare, prepared here if no run has written them)."""
    cfg = load_config(train_args(args, "sft", None, args.study_dir / "unused", "", DATA_SEED))
    return Path(cfg.data_dir) if args.dry_run or not prepare else prepare_data(cfg)


def evaluate(args, evaluations: list[Evaluation]):
    data = evaluation_data_dir(args, prepare=False)
    todo = [ev for ev in evaluations if not evaluation_finished(ev, eval_argv(args, ev, data))]
    print(f"eval: {len(evaluations) - len(todo)} of {len(evaluations)} finished")
    if not todo:
        return
    data = evaluation_data_dir(args, prepare=True)
    jobs = [Job(f"eval {ev.run.name} {ev.sampler}",
                [sys.executable, str(ROOT / "eval_eos.py"), *eval_argv(args, ev, data)],
                args.study_dir / "logs" / f"eval-{ev.run.name}-{ev.sampler}.log") for ev in todo]
    run_jobs(jobs, args.jobs, args.dry_run)


# -----------------------------------------------------------------------------
# The report: per-prompt outcomes -> rates with intervals, overall and per task

RUN_NAME = re.compile(r"^(?P<recipe>.+)-s(?P<seed>\d+)$")  # runs/<recipe>-s<seed>, eval/<recipe>-s<seed>/


def read_evaluations(study_dir: Path) -> dict:
    """{(recipe, sampler): {seed: (results.json, samples.jsonl rows)}} of every evaluation in study_dir/eval."""
    cells = {}
    for samples in sorted((study_dir / "eval").glob("*/*/samples.jsonl")):
        name = RUN_NAME.match(samples.parent.parent.name)
        if name and (samples.parent / "results.json").is_file():
            results = json.loads((samples.parent / "results.json").read_text())
            rows = [json.loads(line) for line in samples.read_text().splitlines()]
            cells.setdefault((name["recipe"], samples.parent.name), {})[int(name["seed"])] = (results, rows)
    return cells


def prompt_outcomes(rows: list[dict], sampler: str, dataset: str, where: Path) -> dict:
    """Per prompt, every rate of RATES (None where it does not apply) and the prompt's task (the length suite's;
    None on free text). Exact match and length are tasks.score's, on the texts in samples.jsonl."""
    if any("finished" not in row for row in rows):
        raise StudyError(f"{where} has no per-prompt 'finished' (an older eval_eos.py wrote it): delete it and run "
                         f"--stage=eval again")
    none = [None] * len(rows)
    out = dict(terminated=[row["finished"][sampler] for row in rows], exact_match=none, exact_length=none,
               first_step_eos_exact=[row.get("first_step_eos_exact") for row in rows], task=none)
    if dataset == "lengthtask":
        out["task"] = [task_of(row["prompt"]) for row in rows]
        scores = [score(Example(task, row["prompt"], row["reference"]), row[sampler])
                  for task, row in zip(out["task"], rows)]
        out["exact_match"] = [s["exact_match"] for s in scores]
        out["exact_length"] = [s["exact_length"] for s in scores]
    return out


def rates(outcomes_by_seed: list[dict], task: str | None = None) -> dict:
    """{rate: stats.rate_with_interval} over the seeds, on the prompts of `task` (all of them for None)."""
    return {rate: rate_with_interval([[float(v) for v, t in zip(o[rate], o["task"])
                                       if v is not None and task in (None, t)] for o in outcomes_by_seed])
            for rate, _ in RATES}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(study_dir: Path) -> dict:
    """study.json: every cell (recipe x sampler) with its seeds, rates and per-task rates, and the model-level
    numbers of eval_eos's results.json (validation NLL, mean length, length MAE) as means over seeds."""
    found = read_evaluations(study_dir)
    if not found:
        raise StudyError(f"no finished evaluation in {study_dir / 'eval'}: run --stage=eval first")
    datasets = {results["data"]["dataset"] for by_seed in found.values() for results, _ in by_seed.values()}
    if len(datasets) > 1:
        raise StudyError(f"{study_dir} holds evaluations of several datasets {sorted(datasets)}")
    dataset = datasets.pop()
    prompts = {(recipe, sampler, seed): [row["prompt"] for row in rows]
               for (recipe, sampler), by_seed in found.items() for seed, (_, rows) in by_seed.items()}
    first_key, first_prompts = next(iter(prompts.items()))
    for key, these in prompts.items():  # the intervals compare models on the same prompts, or mean nothing
        if these != first_prompts:
            raise StudyError(f"the evaluations {key} and {first_key} are of different prompts (another --num_samples, "
                             f"or other data): evaluate them again on the same")
    cells = []
    for (recipe, sampler), by_seed in sorted(found.items()):
        outcomes = [prompt_outcomes(rows, sampler, dataset, study_dir / "eval" / f"{recipe}-s{seed}" / sampler)
                    for seed, (_, rows) in sorted(by_seed.items())]
        tasks = sorted({t for o in outcomes for t in o["task"] if t is not None})
        results = [r for _, (r, _) in sorted(by_seed.items())]
        cells.append(dict(recipe=recipe, sampler=sampler, seeds=sorted(by_seed), rates=rates(outcomes),
                          base_ids=[r["model"].get("base_id") for r in results],
                          per_task={task: rates(outcomes, task) for task in tasks},
                          val_nll=_mean((r["quality"] or {}).get("val_nll") for r in results),
                          mean_length=_mean(r["samplers"][sampler]["mean_generated"] for r in results),
                          length_mae=_mean(r["samplers"][sampler]["mae"] for r in results),
                          lengths=[n for r in results for n in r["samplers"][sampler].get("generated_lengths", [])],
                          judge_ppl=_mean(r["samplers"][sampler].get("gen_ppl") for r in results),
                          eos_last_slot=_mean(r["samplers"][sampler].get("eos_last_slot") for r in results)))
    first = next(iter(next(iter(found.values())).values()))[0]
    return dict(dataset=dataset, num_samples=first["data"]["num_samples"],
                reference_mean_length=first["reference"]["mean_length"],
                reference_judge_ppl=first["reference"].get("gen_ppl"),
                reference_lengths=first["data"].get("reference_lengths", []), cells=cells)


def _interval(r: dict) -> str:
    return "-" if r["mean"] is None else f"{r['mean']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"


def _number(x, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)


def base_letters(cells: list[dict]) -> dict:
    """{base checkpoint id: "A", "B", ...} in the order the cells meet them. Two trainings of one base config on a
    GPU give different weights, so the id, not the config, says whether two cells started from the same base."""
    ids = [i for c in cells for i in c["base_ids"] if i is not None]
    return {i: chr(ord("A") + n) for n, i in enumerate(dict.fromkeys(ids))}


def markdown(summary: dict, figures: list[str]) -> str:
    rate_headers = [header for _, header in RATES]
    letters = base_letters(summary["cells"])
    lines = [f"# The recipe study: {summary['dataset']}", "",
             f"{summary['num_samples']} held-out prompts, the same for every model (mean reference length "
             f"{summary['reference_mean_length']:.1f} tokens). Each rate is the mean over the fine-tune seeds with a "
             f"95% bootstrap interval (seeds resampled, then prompts within each; nanodllm/stats.py). \"-\": does "
             f"not apply (no exact answer on free text, no first-step test for a causal model). val NLL, mean len "
             f"and len MAE are means over seeds; each recipe's NLL bound scores its own tokens (ar: every token, "
             f"prompts too), so compare it only between recipes that score the same.", "",
             "| recipe | sampler | seeds | " + " | ".join(rate_headers)
             + " | val NLL | mean len | len MAE | judge ppl | EOS in last slot | base |",
             "|---|---|---|" + "---:|" * (len(RATES) + 5) + "---|"]
    for c in summary["cells"]:
        bases = ",".join(dict.fromkeys(letters.get(i, "?") for i in c.get("base_ids", [])))
        lines.append(f"| {c['recipe']} | {c['sampler']} | {','.join(map(str, c['seeds']))} | "
                     + " | ".join(_interval(c["rates"][rate]) for rate, _ in RATES)
                     + f" | {_number(c['val_nll'], '{:.3f}')} | {_number(c['mean_length'], '{:.1f}')} | "
                       f"{_number(c['length_mae'], '{:.1f}')} | {_number(c.get('judge_ppl'), '{:.1f}')} | "
                       f"{_number(c.get('eos_last_slot'), '{:.0%}')} | {bases} |")
    lines += ["", "EOS in last slot: the share of finished answers whose EOS fell in the last slot of a decoding "
              "block (block sampler; about 1/32 for EOSs spread evenly over blocks of 32): the shortcut \"EOS at "
              "the end of what I see\" shows as a large share.",
              "", "base: the base checkpoint each cell's seeds were fine-tuned from ("
              + (", ".join(f"{letter} = {i}" for i, letter in letters.items()) or "none recorded") + "; ? = not "
              "recorded). Cells of one letter started from the same weights and compare paired; across letters a "
              "difference also holds the difference between two bases (another kind, or another training of one "
              "config: GPU training is not bitwise repeatable)."]
    if summary.get("reference_judge_ppl") is not None:  # eval_eos --judge: the anchor for the samplers' numbers
        lines += ["", f"judge ppl: the perplexity of each answer under the --judge model (eval_eos.py); the held-out "
                      f"references score {summary['reference_judge_ppl']:.1f}."]
    tasks = sorted({task for c in summary["cells"] for task in c["per_task"]})
    if tasks:
        lines += ["", "## Per task", "", "| task | recipe | sampler | prompts | " + " | ".join(rate_headers) + " |",
                  "|---|---|---|" + "---:|" * (len(RATES) + 1)]
        for task in tasks:
            for c in summary["cells"]:
                r = c["per_task"].get(task)
                if r:
                    n = max(v["n_prompts"] // max(1, v["n_seeds"]) for v in r.values())
                    lines.append(f"| {task} | {c['recipe']} | {c['sampler']} | {n} | "
                                 + " | ".join(_interval(r[rate]) for rate, _ in RATES) + " |")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def report(study_dir: Path):
    """report/study.json, study.md and the figures, from every evaluation in study_dir."""
    summary = summarize(study_dir)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    label = {id(c): f"{c['recipe']} / {c['sampler']}" for c in summary["cells"]}
    plots.plot_intervals({header: {label[id(c)]: c["rates"][rate] for c in summary["cells"]} for rate, header in RATES
                          if any(c["rates"][rate]["mean"] is not None for c in summary["cells"])},
                         out / "rates.png", f"{summary['dataset']}: rates, mean over seeds, 95% intervals")
    figures = ["rates.png"]
    tasks = sorted({task for c in summary["cells"] for task in c["per_task"]})
    if tasks:
        plots.plot_intervals({task: {label[id(c)]: c["per_task"][task]["exact_length"] for c in summary["cells"]
                                     if task in c["per_task"]} for task in tasks},
                             out / "tasks.png", f"{summary['dataset']}: exact length per task")
        figures.append("tasks.png")
    if summary["reference_lengths"] and any(c["lengths"] for c in summary["cells"]):
        plots.plot_length_histograms(summary["reference_lengths"], {label[id(c)]: c["lengths"] for c in
                                                                    summary["cells"] if c["lengths"]},
                                     out / "lengths.png", f"{summary['dataset']}: generated lengths, all seeds")
        figures.append("lengths.png")
    # The bases, and each recipe's fine-tune of its lowest seed (all seeds would crowd the figure).
    logs = {f"base-{log.parent.name}": log for log in sorted(study_dir.glob("base/*/log.jsonl"))}
    for log in sorted(study_dir.glob("runs/*/log.jsonl"), key=lambda p: int(RUN_NAME.match(p.parent.name)["seed"])):
        logs.setdefault(RUN_NAME.match(log.parent.name)["recipe"], log)
    if logs:
        plots.plot_training_logs(list(logs.values()), list(logs), out / "training.png",
                                 f"{summary['dataset']}: bases, and fine-tunes of the lowest seed")
        figures.append("training.png")
    (out / "study.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "study.md").write_text(markdown(summary, figures))
    print(f"wrote {out}/study.md, study.json, " + ", ".join(figures))


# -----------------------------------------------------------------------------
# Small results in and out (a device call brings back at most 8 files)

def small_files(study_dir: Path) -> list[Path]:
    """Every file worth keeping without the checkpoints and the data: logs, evaluations, the report."""
    patterns = ("base/*/log.jsonl", "runs/*/log.jsonl", "eval/*/*/*", "logs/*.log", "report/*")
    return sorted(p for pattern in patterns for p in study_dir.glob(pattern) if p.is_file())


def collect(study_dir: Path, dataset: str, into: Path):
    into.mkdir(parents=True, exist_ok=True)
    archive = into / f"study-{dataset}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in small_files(study_dir):
            tar.add(path, arcname=str(path.relative_to(study_dir)))
    for path in sorted((study_dir / "report").glob("*")):
        shutil.copy(path, into / path.name)
    print(f"collected {archive} and report/'s files into {into}")


def unpack(archive: Path, study_dir: Path):
    if not Path(archive).is_file():
        raise StudyError(f"--merge: {archive} does not exist")
    with tarfile.open(archive) as tar:
        tar.extractall(study_dir, filter="data")  # refuses absolute paths and ../ escapes
    print(f"unpacked {archive} into {study_dir}")


def main(argv=None):
    args = parse_args(argv)
    for archive in args.merge:
        unpack(archive, args.study_dir)
    bases, runs, evaluations = plan(args)
    try:
        if "base" in args.stages:
            train(args, bases, "base")
        if "finetune" in args.stages:
            require_finished(args, bases, "base", "finetune")
            train(args, runs, "finetune")
        if "eval" in args.stages:
            require_finished(args, runs, "finetune", "eval")
            evaluate(args, evaluations)
        if "report" in args.stages and not args.dry_run:
            report(args.study_dir)
    finally:  # also after a failure or an interrupt: what was done, and the logs of what failed, come back
        if args.collect:
            collect(args.study_dir, args.dataset, Path(args.collect))


if __name__ == "__main__":
    try:
        main()
    except (StudyError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # e.g. timeout -s INT: the runs keep their last checkpoints
        print("interrupted: the same command resumes where this one stopped", file=sys.stderr)
        sys.exit(130)
