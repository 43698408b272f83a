"""study.py: the plan of a study, the whole pipeline on the CPU (--tiny), resuming, the fine-tune's start from the
base, collecting and merging results, and the report's per-task rows on hand-made evaluations."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

import study
from nanodllm.checkpoint import read_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_study(study_dir, data_source, *extra):
    return ["--tiny", "--dataset=tinystories", f"--data_source={data_source}", f"--study_dir={study_dir}",
            "--recipes=dllm_var", "--seeds=0", "--samplers=block", *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_data):
    """A whole tiny study, run once: base -> fine-tune -> eval -> report (about 40 s on 2 cores)."""
    study_dir = tmp_path_factory.mktemp("study") / "s"
    study.main(tiny_study(study_dir, tiny_data.parent / "raw"))
    return study_dir, tiny_data.parent / "raw"


def weights(run_dir, step=None):
    name = f"ckpt_{step:07d}" if step else json.loads((run_dir / "latest.json").read_text())["checkpoint"]
    return load_file(str(run_dir / name / "model.safetensors"))


def no_subprocess(job):
    raise AssertionError(f"started {job.command}")


def test_plan_gives_every_recipe_and_seed_its_run_and_ar_its_own_base(tmp_path):
    args = study.parse_args(["--dataset=lengthtask", f"--study_dir={tmp_path}", "--recipes=ar,dllm_var",
                             "--seeds=2,0", "--samplers=block,llada"])
    bases, runs, evaluations = study.plan(args)
    assert [b.name for b in bases] == ["base-ar", "base-diffusion"]
    assert [r.name for r in runs] == ["ar-s0", "ar-s2", "dllm_var-s0", "dllm_var-s2"]
    dllm_var = runs[3].config()
    assert (dllm_var.recipe, dllm_var.seed, dllm_var.t_min, dllm_var.block_size) == ("dllm_var", 2, 0.1, 640)
    assert dllm_var.init_from == str(tmp_path / "base" / "diffusion") and runs[0].config().init_from.endswith("ar")
    base = bases[1].config()
    assert (base.recipe, base.t_min, base.t_max, base.loss_weighting) == ("pretrain", 1e-3, 1.0, "elbo")
    assert bases[0].config().recipe == "ar" and bases[0].config().max_iters == base.max_iters  # same budget
    assert [(e.run.name, e.sampler) for e in evaluations] == [
        ("ar-s0", "ar"), ("ar-s2", "ar"), ("dllm_var-s0", "block"), ("dllm_var-s0", "llada"),
        ("dllm_var-s2", "block"), ("dllm_var-s2", "llada")]
    # one suite for every training seed: its data_seed is fixed
    assert {r.config().data_dir for r in runs} == {str(tmp_path / "data" / "lengthtask")}
    assert {r.config().data_seed for r in runs} == {study.DATA_SEED}


def test_a_recipe_at_a_base_starts_from_that_base(tmp_path):
    args = study.parse_args(["--dataset=lengthtask", f"--study_dir={tmp_path}", "--recipes=block_pad@ar,eos_pad",
                             "--seeds=0", "--samplers=block"])
    bases, runs, evaluations = study.plan(args)
    assert [b.name for b in bases] == ["base-ar", "base-diffusion"]  # no ar recipe, yet the AR base is trained
    assert [r.name for r in runs] == ["block_pad@ar-s0", "eos_pad-s0"]
    block_pad = runs[0].config()
    assert (block_pad.recipe, block_pad.init_from) == ("block_pad", str(tmp_path / "base" / "ar"))
    assert runs[1].config().init_from == str(tmp_path / "base" / "diffusion")
    assert [(e.run.name, e.sampler) for e in evaluations] == [("block_pad@ar-s0", "block"), ("eos_pad-s0", "block")]
    alone = study.parse_args(["--dataset=lengthtask", f"--study_dir={tmp_path}", "--recipes=block_pad@ar"])
    assert [b.name for b in study.plan(alone)[0]] == ["base-ar"]


def test_the_whole_study_runs_every_recipe_file_and_block_pad_from_the_ar_base(tmp_path):
    runs = study.plan(study.parse_args([f"--study_dir={tmp_path}", "--seeds=0"]))[1]
    files = sorted(f.stem for f in (study.ROOT / "config" / "recipes").glob("*.py"))
    assert sorted(r.name for r in runs) == sorted([f"{name}-s0" for name in files] + ["block_pad@ar-s0"])


def test_a_diffusion_recipe_fine_tunes_from_the_ar_base_weights(tmp_path, tiny_data):
    """The causal base's weights load into the block-causal recipe (attention holds no weights): with a learning
    rate of 0 the fine-tune ends on them."""
    study.main(tiny_study(tmp_path / "s", tiny_data.parent / "raw", "--recipes=block_pad@ar", "--stage=base,finetune",
                          "--finetune_flags=--learning_rate=0 --min_lr=0"))
    base, tuned = weights(tmp_path / "s" / "base" / "ar"), weights(tmp_path / "s" / "runs" / "block_pad@ar-s0")
    assert base.keys() == tuned.keys() and all((base[k] == tuned[k]).all() for k in base)
    saved = read_config(tmp_path / "s" / "runs" / "block_pad@ar-s0")  # its latest checkpoint's
    assert (saved["train"]["recipe"], saved["model"]["attention"]) == ("block_pad", "block_causal")


def test_tiny_study_end_to_end(finished):
    study_dir, _ = finished
    summary = json.loads((study_dir / "report" / "study.json").read_text())
    assert summary["dataset"] == "tinystories" and summary["num_samples"] == 4
    [cell] = summary["cells"]
    assert (cell["recipe"], cell["sampler"], cell["seeds"]) == ("dllm_var", "block", [0])
    terminated = cell["rates"]["terminated"]
    assert terminated["n_prompts"] == 4 and 0 <= terminated["low"] <= terminated["mean"] <= terminated["high"] <= 1
    assert cell["rates"]["exact_match"]["mean"] is None  # free text: no exact answer
    assert cell["val_nll"] > 0 and cell["mean_length"] is not None
    table = (study_dir / "report" / "study.md").read_text()
    assert "| dllm_var | block | 0 |" in table
    assert len(cell["lengths"]) == 4 and len(summary["reference_lengths"]) == 4
    for name in ("rates.png", "lengths.png", "training.png"):
        assert (study_dir / "report" / name).stat().st_size > 10_000
    for name in ("results.json", "samples.jsonl", "results.md"):
        assert (study_dir / "eval" / "dllm_var-s0" / "block" / name).is_file()


def test_a_finished_study_is_not_redone(finished, monkeypatch):
    study_dir, data_source = finished
    monkeypatch.setattr(study, "launch", no_subprocess)
    study.main(tiny_study(study_dir, data_source))  # every stage finished: no train.py, no eval_eos.py


def test_an_evaluation_with_other_settings_is_done_again(finished, tmp_path, monkeypatch):
    study_dir, data_source = finished
    started = []
    monkeypatch.setattr(study, "launch", lambda job: started.append(job.command) or 0)
    for flags in ("--eos_frontier", "--judge=/elsewhere/ar-s0"):
        study.main(tiny_study(study_dir, data_source, "--stage=eval", f"--eval_flags={flags}"))
        assert started.pop()[-1] == flags
    copy = tmp_path / "moved"  # the same evaluations elsewhere (another session's paths): nothing to do again
    subprocess.run(["cp", "-r", str(study_dir), str(copy)], check=True)
    monkeypatch.setattr(study, "launch", no_subprocess)
    study.main(tiny_study(copy, data_source, "--stage=eval"))


def test_a_stopped_run_resumes_and_other_settings_are_refused(finished, tmp_path, monkeypatch):
    study_dir, data_source = finished
    copy = tmp_path / "s"
    subprocess.run(["cp", "-r", str(study_dir), str(copy)], check=True)
    (copy / "base" / "diffusion" / "latest.json").write_text(json.dumps(dict(checkpoint="ckpt_0000002", step=2)))
    started = []
    monkeypatch.setattr(study, "launch", lambda job: started.append(job.command) or 0)
    study.main(tiny_study(copy, data_source, "--stage=base"))
    [command] = started
    assert command[-1] == "--resume" and command[1].endswith("train.py")
    with pytest.raises(study.StudyError, match="other settings .max_iters: checkpoint 4, now 8"):
        study.main(tiny_study(study_dir, data_source, "--stage=base", "--base_flags=--max_iters=8"))
    with pytest.raises(study.StudyError, match="eval needs dllm_var-s5 finished: run --stage=finetune first"):
        study.main(tiny_study(study_dir, data_source, "--stage=eval", "--seeds=5"))


def test_a_fine_tune_starts_from_the_base_final_weights(finished):
    """With a learning rate of 0 the fine-tune's last weights are its first: they must be the base's last."""
    study_dir, data_source = finished
    study.main(tiny_study(study_dir, data_source, "--stage=finetune", "--seeds=7",
                          "--finetune_flags=--learning_rate=0 --min_lr=0"))
    base, tuned = weights(study_dir / "base" / "diffusion"), weights(study_dir / "runs" / "dllm_var-s7")
    assert base.keys() == tuned.keys() and all((base[k] == tuned[k]).all() for k in base)
    base_id = read_config(study_dir / "base" / "diffusion")["id"]
    assert read_config(study_dir / "runs" / "dllm_var-s7")["lineage"]["init_from_id"] == base_id
    results = json.loads((study_dir / "eval" / "dllm_var-s0" / "block" / "results.json").read_text())
    assert results["model"]["base_id"] == base_id  # what the report's base column reads
    earlier = weights(study_dir / "base" / "diffusion", step=2)
    assert any((earlier[k] != base[k]).any() for k in base)  # so the test tells the final weights apart


def test_collect_then_merge_reports_the_same(finished, tmp_path):
    study_dir, data_source = finished
    study.main(tiny_study(study_dir, data_source, "--stage=report", f"--collect={tmp_path / 'out'}"))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "study-tinystories.tar.gz" in files and "study.md" in files and len(files) <= 8
    merged = tmp_path / "merged"
    study.main(["--dataset=tinystories", f"--study_dir={merged}", "--stage=report",
                "--merge", str(tmp_path / "out" / "study-tinystories.tar.gz")])
    assert not list(merged.rglob("*.safetensors"))  # only small files travel
    assert (json.loads((merged / "report" / "study.json").read_text())
            == json.loads((study_dir / "report" / "study.json").read_text()))


def write_evaluation(study_dir, name, sampler, rows, judged=None, base_id="base0"):
    """judged: (the answers' perplexity, the references') under eval_eos --judge, if it was given; base_id: the
    checkpoint id of the base the model was fine-tuned from"""
    out = study_dir / "eval" / name / sampler
    out.mkdir(parents=True)
    results = dict(data=dict(dataset="lengthtask", num_samples=len(rows)), reference=dict(mean_length=2.0),
                   quality=dict(val_nll=1.5), samplers={sampler: dict(mean_generated=2.0, mae=0.5)},
                   model=dict(base_id=base_id))
    if judged:
        results["samplers"][sampler]["gen_ppl"], results["reference"]["gen_ppl"] = judged
    (out / "results.json").write_text(json.dumps(results))
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_rows_per_task_on_hand_made_evaluations(tmp_path):
    def row(prompt, reference, response, finished, first):
        return dict(prompt=prompt, reference=reference, block=response, finished=dict(block=finished),
                    first_step_eos_exact=first)
    for seed in (0, 1):  # count is always right; spell is right in length only, and only for seed 1
        write_evaluation(tmp_path, f"dllm_var-s{seed}", "block", [
            row("Count from 3 to 4\nAnswer:", " 3 4", " 3 4", True, True),
            row("Count from 7 to 8\nAnswer:", " 7 8", " 7 8", True, True),
            row("Spell: cat\nAnswer:", " c a t", " c a x" if seed else " c a", bool(seed), None)])
    study.report(tmp_path)
    [cell] = json.loads((tmp_path / "report" / "study.json").read_text())["cells"]
    count, spell = cell["per_task"]["count"], cell["per_task"]["spell"]
    assert count["exact_match"] == dict(mean=1.0, low=1.0, high=1.0, n_seeds=2, n_prompts=4)
    assert (spell["exact_match"]["mean"], spell["exact_length"]["mean"], spell["terminated"]["mean"]) == (0, .5, .5)
    assert (spell["exact_length"]["low"], spell["exact_length"]["high"]) == (0.0, 1.0)  # one seed each way
    assert spell["first_step_eos_exact"]["n_prompts"] == 0  # beyond the canvas: no outcome, not a failure
    assert cell["rates"]["exact_match"]["mean"] == pytest.approx(2 / 3)
    assert cell["rates"]["first_step_eos_exact"] == dict(mean=1.0, low=1.0, high=1.0, n_seeds=2, n_prompts=4)
    table = (tmp_path / "report" / "study.md").read_text()
    assert "| count | dllm_var | block | 2 | 100% [100%, 100%] | 100% [100%, 100%]" in table
    assert "| spell | dllm_var | block | 1 | 50% [0%, 100%] | 0% [0%, 0%] | 50% [0%, 100%] | - |" in table
    assert (tmp_path / "report" / "tasks.png").is_file()


def test_report_gives_the_judge_perplexity_as_the_mean_over_seeds(tmp_path):
    rows = [dict(prompt="Count from 3 to 4\nAnswer:", reference=" 3 4", block=" 3 4", finished=dict(block=True))]
    for seed, ppl in ((0, 10.0), (1, 20.0)):
        write_evaluation(tmp_path, f"dllm_var-s{seed}", "block", rows, judged=(ppl, 8.0))
    study.report(tmp_path)
    summary = json.loads((tmp_path / "report" / "study.json").read_text())
    assert (summary["cells"][0]["judge_ppl"], summary["reference_judge_ppl"]) == (15.0, 8.0)
    table = (tmp_path / "report" / "study.md").read_text()
    assert "| 1.500 | 2.0 | 0.5 | 15.0 | - | A |" in table and "the held-out references score 8.0" in table


def test_report_says_which_cells_share_a_base(tmp_path):
    """Seeds fine-tuned from two trainings of the base (two sessions, merged) are marked, not silently pooled."""
    rows = [dict(prompt="Count from 3 to 4\nAnswer:", reference=" 3 4", block=" 3 4", finished=dict(block=True))]
    write_evaluation(tmp_path, "block_pad-s0", "block", rows, base_id="first")
    write_evaluation(tmp_path, "block_pad-s1", "block", rows, base_id="second")
    write_evaluation(tmp_path, "dllm_var-s0", "block", rows, base_id="first")
    write_evaluation(tmp_path, "eos_pad-s0", "block", rows, base_id=None)  # written before checkpoints had ids
    study.report(tmp_path)
    cells = json.loads((tmp_path / "report" / "study.json").read_text())["cells"]
    assert [c["base_ids"] for c in cells] == [["first", "second"], ["first"], [None]]
    table = (tmp_path / "report" / "study.md").read_text()
    assert "| A,B |" in table.splitlines()[6] and table.splitlines()[7].endswith("| A |")
    assert table.splitlines()[8].endswith("| ? |") and "(A = first, B = second; ? = not recorded)" in table


def test_cli_errors_are_one_line(capsys):
    for flags, message in ((["--recipes=nope"], "--recipes must name some of"),
                           (["--recipes=block_pad@gpt2"], "each optionally @ one of ('diffusion', 'ar')"),
                           (["--recipes=nope@ar"], "got ['nope@ar']"),
                           (["--stage=train"], "--stage must name some of"),
                           (["--seeds=a"], "--seeds must be comma-separated integers")):
        with pytest.raises(SystemExit) as exit_:
            study.parse_args(flags)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    result = subprocess.run([sys.executable, "study.py", "--stage=report", "--study_dir=/nonexistent/x"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: no finished evaluation in")


def test_a_failed_job_names_its_log_and_the_results_are_still_collected(finished, tmp_path):
    study_dir, data_source = finished
    with pytest.raises(study.StudyError, match="(?s)1 of 1 failed: eval dllm_var-s0 block.*pass --canvas"):
        study.main(tiny_study(study_dir, data_source, "--stage=eval", "--num_samples=3", "--eval_flags=--canvas 9999",
                              f"--collect={tmp_path}"))
    with tarfile.open(tmp_path / "study-tinystories.tar.gz") as tar:
        assert "logs/eval-dllm_var-s0-block.log" in tar.getnames()


def test_report_refuses_evaluations_of_different_prompts(tmp_path):
    row = dict(reference=" a", block=" a", finished=dict(block=True), first_step_eos_exact=True)
    write_evaluation(tmp_path, "dllm_var-s0", "block", [dict(row, prompt="Spell: cat\nAnswer:")])
    write_evaluation(tmp_path, "dllm_var-s1", "block", [dict(row, prompt="Spell: dog\nAnswer:")])
    with pytest.raises(study.StudyError, match="are of different prompts"):
        study.report(tmp_path)
