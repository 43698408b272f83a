"""bench_sampler.py end to end on the CPU: tiny random checkpoints, TinyStories prompts, every sampler."""

import json
from types import SimpleNamespace

import pytest
import torch

import bench_sampler
from nanodllm.checkpoint import read_config, save_checkpoint
from nanodllm.config import TrainConfig, config_to_dict
from nanodllm.sampler_stats import GenerationStats
from nanodllm.training import build_model
from tests.conftest import tiny_model

TINY = dict(dataset="tinystories", n_layer=2, n_head=2, d_model=32, mlp_hidden=64, block_size=128, compile=False,
            device="cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_sampler")
    for recipe in ("dllm_var", "ar"):
        cfg = TrainConfig(recipe=recipe, **TINY)
        torch.manual_seed(0)
        save_checkpoint(root / recipe, 1, build_model(cfg), config_to_dict(cfg), {})
    return root


def test_every_sampler_and_the_speedups(checkpoints, tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--ar_init_from", str(checkpoints / "ar"),
                        "--data_dir", str(tiny_data), "--n_prompts", "3", "--batch_sizes", "1,2",
                        "--block_size", "8", "--max_new_tokens", "24", "--llada_gen_length", "16",
                        "--llada_steps", "8", "--llada_block_length", "8", "--device", "cpu", "--out", str(out)])
    r = json.loads(out.read_text())
    rows = {(row["sampler"], row["batch_size"]): row for row in r["results"]}
    assert set(rows) == {(s, b) for s in bench_sampler.SAMPLERS for b in (1, 2)}
    for (name, b), row in rows.items():
        assert row["n_prompts"] == 3 and 0 < row["mean_length"] <= 24
        assert row["tokens_per_s"] > 0 and row["s_per_prompt"] > 0
        mode = "_graphs" if name.endswith("_graphs") else ""
        llada, ar = rows[("llada" + mode, b)], rows[("ar" + mode, b)]
        assert row["time_speedup_vs_llada"] == pytest.approx(llada["s_per_prompt"] / row["s_per_prompt"])
        assert row["tokens_per_s_vs_ar"] == pytest.approx(row["tokens_per_s"] / ar["tokens_per_s"])
    assert rows[("llada", 1)]["nfe"] == 3 * 8  # the vanilla sampler: `steps` passes per prompt, no early stop
    assert "time vs LLaDA" in r["table"] and "judge ppl" in r["table"]
    lines = r["table"].splitlines()
    for row in r["results"]:  # rows/pass: the rows each pass carried that were still writing
        cells = next(line for line in lines if line.startswith(f"| {row['label']} | {row['batch_size']} |")).split("|")
        rows_per_pass = float(cells[5])
        assert rows_per_pass == pytest.approx(row["row_nfe"] / row["nfe"], abs=0.005)
        assert rows_per_pass == 1 if row["batch_size"] == 1 else 1 <= rows_per_pass <= 2
    for row in r["results"]:  # quality, judged by the AR checkpoint
        assert row["judge_ppl"] > 1 and 0 <= row["repetition"] <= 1
    # both checkpoints by id as well as path: scripts/compare_runs.py tells two judges at one path apart by it
    assert r["checkpoint"]["id"] == read_config(checkpoints / "dllm_var")["id"]
    assert r["ar_checkpoint"]["id"] == read_config(checkpoints / "ar")["id"] != r["checkpoint"]["id"]


def test_a_threshold_sweep_runs_the_block_samplers_at_each(checkpoints, tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--ar_init_from", str(checkpoints / "ar"),
                        "--data_dir", str(tiny_data), "--n_prompts", "2", "--batch_sizes", "2",
                        "--samplers", "block,ar", "--thresholds", "1.0,0.0", "--block_size", "8",
                        "--max_new_tokens", "16", "--device", "cpu", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [(row["sampler"], row["threshold"]) for row in rows] == [("block", 1.0), ("block", 0.0), ("ar", None)]
    strict, eager = rows[0], rows[1]
    # threshold 1: no probability exceeds 1, so each pass commits only its one most confident position (>= 1 pass
    # per kept token); threshold 0: every masked position is committed in the block's first pass
    assert strict["nfe_per_token"] >= 1
    assert eager["nfe"] <= 2 * 2 and eager["nfe_per_token"] < 0.2
    assert "threshold 0.0" in eager["label"]
    assert eager["tokens_per_s_vs_ar"] == pytest.approx(eager["tokens_per_s"] / rows[2]["tokens_per_s"])
    # the judge's perplexity at 0 over 1's on the same prompts, with a paired interval over the prompts
    d = eager["judge_ppl_vs_reference"]
    assert strict["judge_ppl_vs_reference"] is None and d["reference"] == 1.0 and d["n_prompts"] == 2
    assert d["ratio"] == pytest.approx(eager["judge_ppl"] / strict["judge_ppl"], rel=1e-6)
    assert d["low"] <= d["ratio"] <= d["high"]
    assert sum(eager["judge_tokens_per_prompt"]) == eager["total_tokens"]
    assert f"ppl {d['ratio']:.2f}x [{d['low']:.2f}, {d['high']:.2f}]" in json.loads(out.read_text())["table"]


def test_no_ar_checkpoint_skips_both_ar_samplers(checkpoints, tiny_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--data_dir", str(tiny_data),
                        "--n_prompts", "1", "--batch_sizes", "1", "--samplers", "block,ar,ar_graphs",
                        "--block_size", "8", "--max_new_tokens", "8", "--device", "cpu", "--out", str(out)])
    assert [row["sampler"] for row in json.loads(out.read_text())["results"]] == ["block"]
    assert "skipping the autoregressive baseline" in capsys.readouterr().out


@pytest.mark.parametrize("thresholds, message", [("0.9,high", "comma-separated numbers"), ("0.9,1.5", "in \\[0, 1\\]")])
def test_bad_thresholds_are_refused(thresholds, message, capsys):
    with pytest.raises(SystemExit):
        bench_sampler.parse_args(["--init_from", "x", "--thresholds", thresholds])
    assert message.replace("\\", "") in capsys.readouterr().err


def test_a_negative_profile_batches_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_sampler.parse_args(["--init_from", "x", "--profile_batches", "-1"])
    assert "--profile_batches must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--prompt_file", "ABSENT"], "--prompt_file ABSENT does not exist"),
    (["--init_from", "AR"], "is a causal model; --init_from takes the diffusion model"),
    (["--ar_init_from", "DLLM_VAR"], "is a bidirectional model; pass the autoregressive"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--samplers", "block_slots_graphs"], "block_slots_graphs decodes rows at their own blocks with an exact KV "
                                            "cache, which needs a block_causal model"),
])
def test_a_command_that_cannot_run_says_what_to_do_in_one_line(checkpoints, tiny_data, tmp_path, capsys, flags,
                                                               message):
    args = {"--init_from": str(checkpoints / "dllm_var"), "--data_dir": str(tiny_data), "--n_prompts": "1",
            "--batch_sizes": "1", "--samplers": "block", "--max_new_tokens": "8", "--device": "cpu",
            "--out": str(tmp_path / "bench.json")}
    names = {"ABSENT": str(tmp_path / "absent.txt"), "AR": str(checkpoints / "ar"),
             "DLLM_VAR": str(checkpoints / "dllm_var")}
    args.update(zip(flags[::2], [names.get(v, v) for v in flags[1::2]]))
    with pytest.raises(SystemExit) as stop:
        bench_sampler.main([item for pair in args.items() for item in pair])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert message.replace("ABSENT", names["ABSENT"]) in err


def test_graphed_samplers_record_every_batch_untimed_first(checkpoints, tiny_data, tmp_path, monkeypatch):
    """A graphed sampler first runs every batch in full (the call that records its graphs), then the timed calls
    (which replay them); an eager one warms up once, on a short generation of its first batch."""
    calls = []
    run = bench_sampler.run_sampler

    def logged(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        calls.append((name, len(prompts), warmup))
        return run(name, model, prompts, args, threshold, warmup, slots)

    monkeypatch.setattr(bench_sampler, "run_sampler", logged)
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--data_dir", str(tiny_data),
                        "--n_prompts", "3", "--batch_sizes", "2", "--samplers", "block,block_graphs",
                        "--block_size", "8", "--max_new_tokens", "16", "--device", "cpu", "--out",
                        str(tmp_path / "bench.json")])
    assert calls == [("block", 2, True), ("block", 2, False), ("block", 1, False),
                     ("block_graphs", 2, False), ("block_graphs", 1, False),  # untimed: records
                     ("block_graphs", 2, False), ("block_graphs", 1, False)]  # timed: replays


def test_length_suite_answers_are_scored_for_exact_match(tmp_path, monkeypatch):
    """On the length suite every row gets eval_eos's exact match against its reference, also when prompts are
    repeated to fill a batch: a sampler that writes the references scores 100%, one that drops a token 0%."""
    from nanodllm.prepare import load_split
    from nanodllm.sampler_stats import GenerationStats
    from nanodllm.tasks import ensure_task_data
    from nanodllm.tokenizer import EOS_ID
    data = ensure_task_data(tmp_path / "lengthtask", seed=0, n_train=10, n_val=8)
    cfg = TrainConfig(recipe="dllm_var", **{**TINY, "dataset": "lengthtask", "block_size": 256})
    save_checkpoint(tmp_path / "ckpt", 1, build_model(cfg), config_to_dict(cfg), {})
    answers = {tuple(p): r for p, r in load_split(data, "val").prompt_pairs(3)}
    for cut, expected in ((0, 1.0), (1, 0.0)):
        def write_references(name, model, prompts, args, threshold=None, warmup=False, slots=None):
            out = [answers[tuple(p)][cut:] + [EOS_ID] for p in prompts]
            return out, GenerationStats.of(out, EOS_ID, nfe=1, row_nfe=len(out), seconds=0.01)
        monkeypatch.setattr(bench_sampler, "run_sampler", write_references)
        out = tmp_path / f"bench{cut}.json"
        bench_sampler.main(["--init_from", str(tmp_path / "ckpt"), "--data_dir", str(data), "--n_prompts", "3",
                            "--batch_sizes", "1,4", "--samplers", "block", "--max_new_tokens", "64",
                            "--device", "cpu", "--out", str(out)])
        r = json.loads(out.read_text())
        assert [row["exact_match"] for row in r["results"]] == [expected, expected]
        assert "exact match" in r["table"]


def test_a_lower_threshold_is_scored_against_the_first_on_the_same_prompts(tmp_path, monkeypatch):
    """--thresholds 0.9,0.5: the 0.5 rows get their exact match minus 0.9's, per prompt, with an interval; here
    threshold 0.5 gets the first of 3 prompts wrong and 0.9 none, so -33 points, and the interval, drawn from
    per-prompt differences of 0 and -1 only, lies in [-100, 0] points. The reference row compares with nothing.
    Judged by an AR model, the 0.5 row's perplexity over 0.9's comes with a paired interval: the two rows differ
    only on the first prompt, so some draws leave it out and give exactly 1, and the interval reaches 1."""
    from nanodllm.prepare import load_split
    from nanodllm.sampler_stats import GenerationStats
    from nanodllm.tasks import ensure_task_data
    from nanodllm.tokenizer import EOS_ID
    data = ensure_task_data(tmp_path / "lengthtask", seed=0, n_train=10, n_val=8)
    for recipe in ("dllm_var", "ar"):
        cfg = TrainConfig(recipe=recipe, **{**TINY, "dataset": "lengthtask", "block_size": 256})
        save_checkpoint(tmp_path / recipe, 1, build_model(cfg), config_to_dict(cfg), {})
    pairs = load_split(data, "val").prompt_pairs(3)
    answers = {tuple(p): r for p, r in pairs}
    wrong_at_low = tuple(pairs[0][0])

    def answer(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        out = [answers[tuple(p)][threshold < 0.9 and tuple(p) == wrong_at_low:] + [EOS_ID] for p in prompts]
        return out, GenerationStats.of(out, EOS_ID, nfe=1, row_nfe=len(out), seconds=0.01)
    monkeypatch.setattr(bench_sampler, "run_sampler", answer)
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(tmp_path / "dllm_var"), "--ar_init_from", str(tmp_path / "ar"),
                        "--data_dir", str(data), "--n_prompts", "3", "--batch_sizes", "1", "--samplers", "block",
                        "--thresholds", "0.9,0.5", "--max_new_tokens", "64", "--device", "cpu", "--out", str(out)])
    reference, low = json.loads(out.read_text())["results"]
    assert reference["exact_match_vs_reference"] is None and reference["exact_per_prompt"] == [True] * 3
    d = low["exact_match_vs_reference"]
    assert low["exact_per_prompt"] == [False, True, True] and d["reference"] == 0.9
    assert d["mean"] == pytest.approx(-1 / 3) and -1 <= d["low"] <= d["mean"] <= d["high"] <= 0
    assert "-33.3 pts" in json.loads(out.read_text())["table"]
    ppl = low["judge_ppl_vs_reference"]
    assert ppl["ratio"] == pytest.approx(low["judge_ppl"] / reference["judge_ppl"], rel=1e-6) and ppl["ratio"] != 1
    assert ppl["low"] <= 1 <= ppl["high"] and ppl["low"] <= ppl["ratio"] <= ppl["high"]


def test_profile_splits_a_pass_into_kernels_and_idle_time(checkpoints, tiny_data, tmp_path, monkeypatch):
    """--profile: each row gets its time per forward pass from one more, profiled decoding of its first
    --profile_batches batches (here a made-up profile of 2 ms of kernels and 1 ms idle over that decoding),
    divided by the passes those batches took."""
    profiled = []

    def fake_profile(step, steps, device, top):
        profiled.append([s.nfe for _, s in step()])  # the passes of each batch decoded under the profiler
        return dict(window_ms_per_step=3.0, kernel_ms_per_step=2.0, matmul_ms_per_step=1.5,
                    attention_ms_per_step=0.25, other_ms_per_step=0.25, idle_ms_per_step=1.0,
                    syncs_per_step={"cudaStreamSynchronize": 4}, copies_per_step={"cudaMemcpyAsync": 6},
                    kernels_per_step=500.0, top_kernels=[dict(name="gemm", kind="matmul", ms_per_step=1.5,
                                                              share=0.75, launches_per_step=100.0)],
                    largest_gaps=[dict(us=50.0, after="gemm", before="gemm")],
                    host_ms_per_step={"cudaGraphLaunch": 0.5, "cudaStreamSynchronize": 2.0, "cudaMemcpyAsync": 1.0},
                    longest_host_call_us={"cudaGraphLaunch": 300.0, "cudaStreamSynchronize": 900.0,
                                          "cudaMemcpyAsync": 40.0})

    monkeypatch.setattr(bench_sampler.profiling, "profile_steps", fake_profile)
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--data_dir", str(tiny_data),
                        "--n_prompts", "3", "--batch_sizes", "2", "--samplers", "block", "--block_size", "8",
                        "--max_new_tokens", "16", "--device", "cpu", "--profile", "--profile_batches", "1",
                        "--out", str(out)])
    r = json.loads(out.read_text())
    [row] = r["results"]
    [[passes]] = profiled  # the first of two batches (2 + 1 prompts)
    t = row["time_per_pass"]
    assert 0 < passes < row["nfe"]
    assert t["ms_per_pass"] == pytest.approx(3.0 / passes) and t["idle_ms_per_pass"] == pytest.approx(1.0 / passes)
    assert t["syncs_per_pass"] == pytest.approx(4 / passes) and t["copies_per_pass"] == pytest.approx(6 / passes)
    assert t["kernels_per_pass"] == pytest.approx(500 / passes)
    assert t["top_kernels"] == [dict(name="gemm", kind="matmul", ms_per_pass=pytest.approx(1.5 / passes),
                                     launches_per_pass=pytest.approx(100 / passes))]
    assert t["largest_gaps"] == [dict(us=50.0, after="gemm", before="gemm")]  # the window's, not per pass
    assert t["host_ms_per_pass"] == {"cudaGraphLaunch": pytest.approx(0.5 / passes),
                                     "cudaStreamSynchronize": pytest.approx(2.0 / passes),
                                     "cudaMemcpyAsync": pytest.approx(1.0 / passes)}
    assert t["longest_host_call_us"]["cudaGraphLaunch"] == 300.0  # the window's too, not per pass
    assert "GPU idle" in r["table"]
    assert row["per_call"] is None or row["per_call"]["calls"] == 2  # two batches: fitted if their passes differ
    line = next(l for l in r["table"].split("Where a forward pass")[1].splitlines() if l.startswith("| dLLM-Var"))
    assert line.endswith(f"| {3.0 / passes:.3f} | {0.5 / passes:.3f} | 300 |")  # syncs + copies, launches


def test_a_call_is_timed_end_to_end_not_by_the_samplers_own_timer(checkpoints, tiny_data, tmp_path, monkeypatch):
    """A sampler times only its decoding loop; the benchmark times the whole call, set-up included."""
    import time as clock

    from nanodllm.sampler_stats import GenerationStats

    def slow_set_up(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        clock.sleep(0.05)  # building the canvas, say: outside the sampler's own timer
        out = [[1, 2, EOS] for _ in prompts]
        return out, GenerationStats.of(out, EOS, nfe=1, row_nfe=len(out), seconds=0.001)
    EOS = bench_sampler.get_tokenizer().eos_id
    monkeypatch.setattr(bench_sampler, "run_sampler", slow_set_up)
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--data_dir", str(tiny_data), "--n_prompts",
                        "2", "--batch_sizes", "1", "--samplers", "block", "--device", "cpu", "--out", str(out)])
    [row] = json.loads(out.read_text())["results"]
    assert row["s_per_prompt"] >= 0.05


def test_a_calls_time_is_split_into_a_part_per_call_and_a_part_per_pass():
    passes = [3, 5, 8, 12]
    fit = bench_sampler.per_call_fit([0.004 + 0.002 * n for n in passes], passes)
    assert fit == dict(ms_per_call=pytest.approx(4.0), ms_per_pass=pytest.approx(2.0), calls=4)
    assert bench_sampler.per_call_fit([0.01, 0.02], [4, 4]) is None  # one pass count: no line through it


def test_a_run_cut_while_profiling_keeps_the_rows_it_timed(checkpoints, tiny_data, tmp_path, monkeypatch):
    """A deadline that stops the run inside a row's profile (the slow part) loses that profile, not the row."""
    def cut(step, steps, device, top):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_sampler.profiling, "profile_steps", cut)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--data_dir", str(tiny_data),
                            "--n_prompts", "2", "--batch_sizes", "1", "--samplers", "block", "--block_size", "8",
                            "--max_new_tokens", "16", "--device", "cpu", "--profile", "--out", str(out)])
    r = json.loads(out.read_text())
    [row] = r["results"]
    assert not r["complete"] and row["n_prompts"] == 2 and row["tokens_per_s"] > 0 and row["time_per_pass"] is None


def test_prompt_file_lines_have_no_reference_so_only_the_judge_and_repetition_score_them(checkpoints, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\n\nThe cat sat\n", encoding="utf-8")
    out = tmp_path / "bench.json"
    bench_sampler.main(["--init_from", str(checkpoints / "dllm_var"), "--ar_init_from", str(checkpoints / "ar"),
                        "--prompt_file", str(prompts), "--batch_sizes", "2", "--samplers", "block",
                        "--block_size", "8", "--max_new_tokens", "16", "--device", "cpu", "--out", str(out)])
    [row] = json.loads(out.read_text())["results"]
    assert row["n_prompts"] == 2 and row["judge_ppl"] > 1 and 0 <= row["repetition"] <= 1
    assert row["exact_match"] is None and row["exact_length"] is None


def test_a_run_cut_off_keeps_the_rows_it_measured(checkpoints, tiny_data, tmp_path, monkeypatch):
    out, bench = tmp_path / "bench.json", bench_sampler.bench

    def cut_off_at_the_second_row(name, *args):
        if name == "ar":
            raise KeyboardInterrupt  # as a timeout's SIGINT would
        return bench(name, *args)

    monkeypatch.setattr(bench_sampler, "bench", cut_off_at_the_second_row)
    flags = ["--init_from", str(checkpoints / "dllm_var"), "--ar_init_from", str(checkpoints / "ar"), "--data_dir",
             str(tiny_data), "--n_prompts", "2", "--batch_sizes", "2", "--samplers", "block,ar", "--block_size", "8",
             "--max_new_tokens", "8", "--device", "cpu", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        bench_sampler.main(flags)
    r = json.loads(out.read_text())
    assert [row["sampler"] for row in r["results"]] == ["block"] and r["complete"] is False and r["table"] is None
    monkeypatch.setattr(bench_sampler, "bench", bench)
    bench_sampler.main(flags)
    r = json.loads(out.read_text())
    assert [row["sampler"] for row in r["results"]] == ["block", "ar"] and r["complete"] and "| " in r["table"]


@pytest.mark.parametrize("name", ["block", "llada"])
def test_too_few_prompts_are_repeated_within_each_batch_so_every_batch_is_full(monkeypatch, name):
    """Two prompts at batch size 4: every pass carries 4 rows, also for the vanilla sampler on a block_causal
    model, whose two prompts (lengths 3 and 2 modulo its block) may not share a batch: each is repeated 4 times in
    a batch of its own. Each prompt's completion comes back once, in the pairs' order."""
    calls = []

    def fake(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        calls.append([len(p) for p in prompts])
        out = [[len(p)] for p in prompts]
        return out, GenerationStats.of(out, 0, 1, len(out), 1.0)

    monkeypatch.setattr(bench_sampler, "run_sampler", fake)
    pairs = [(list(range(3)), [1]), (list(range(2)), [1])]
    used, completions, stats, _, _ = bench_sampler.bench(
        name, tiny_model(attention="block_causal", attn_block_size=8), pairs, 4, SimpleNamespace(profile=False),
        torch.device("cpu"), "float32")
    expected = [[3, 2, 3, 2]] if name == "block" else [[2, 2, 2, 2], [3, 3, 3, 3]]  # by length modulo the block
    assert calls[1:] == expected and stats.row_nfe / stats.nfe == 4  # after the warm-up call
    assert used == pairs and completions == [[3], [2]]


@pytest.mark.parametrize("name", ["block", "llada"])
def test_a_block_causal_model_is_benchmarked_in_the_batches_eval_eos_uses(monkeypatch, name):
    """As eval_eos decodes it (sampler.batches), each row as if alone: the block sampler pads each row by whole
    blocks, so its batches take prompts of any lengths in order; the vanilla sampler's hold prompts of equal length
    modulo the block. The completions come back in the pairs' order."""
    calls = []

    def fake(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        calls.append([len(p) % 8 for p in prompts])
        out = [[len(p)] for p in prompts]
        return out, GenerationStats.of(out, 0, 1, len(out), 1.0)

    monkeypatch.setattr(bench_sampler, "run_sampler", fake)
    pairs = [(list(range(n)), [1]) for n in (3, 1, 9, 11, 2)]  # lengths mod 8: 3 1 1 3 2
    _, completions, _, _, _ = bench_sampler.bench(name, tiny_model(attention="block_causal", attn_block_size=8), pairs, 4,
                                               SimpleNamespace(profile=False), torch.device("cpu"), "float32")
    if name == "block":
        assert calls[1:] == [[3, 1, 1, 3], [2]]  # after the warm-up call: in order
    else:
        assert all(len(set(c)) == 1 for c in calls) and sorted(map(len, calls[1:])) == [1, 2, 2]
    assert completions == [[3], [1], [9], [11], [2]]


def test_slots_decode_every_prompt_in_one_call_batch_size_rows_at_a_time(monkeypatch):
    """block_slots_graphs: one call per run (recorded untimed first, as every graphed sampler), all the prompts
    in it whatever their lengths, slots = the batch size; the completions come back in the pairs' order."""
    calls = []

    def fake(name, model, prompts, args, threshold=None, warmup=False, slots=None):
        calls.append((len(prompts), slots, warmup))
        out = [[len(p)] for p in prompts]
        return out, GenerationStats.of(out, 0, 1, len(out), 1.0)

    monkeypatch.setattr(bench_sampler, "run_sampler", fake)
    pairs = [(list(range(n)), [1]) for n in (3, 1, 9, 11, 2)]
    _, completions, _, _, _ = bench_sampler.bench("block_slots_graphs", tiny_model(attention="block_causal"),
                                                  pairs, 4, SimpleNamespace(profile=False), torch.device("cpu"),
                                                  "float32")
    assert calls == [(5, 4, False), (5, 4, False)]
    assert completions == [[3], [1], [9], [11], [2]]


@pytest.mark.parametrize("name, compiled", [("block_slots_graphs", False), ("block_slots_compiled_graphs", True)])
def test_the_compiled_slots_ask_the_sampler_to_compile(monkeypatch, name, compiled):
    given = []
    monkeypatch.setattr(bench_sampler, "generate", lambda sampler, model, prompts, **knobs: given.append(knobs))
    args = SimpleNamespace(seed=0, block_size=32, max_new_tokens=64)
    bench_sampler.run_sampler(name, tiny_model(attention="block_causal"), [[1]], args, 0.9, slots=4)
    assert given[0]["compile"] is compiled and given[0]["slots"] == 4 and given[0]["cuda_graphs"]


@pytest.mark.parametrize("name, compiled, slots", [("ar_graphs", False, None), ("ar_compiled_graphs", True, None),
                                                   ("ar_slots_graphs", False, 4), ("ar_slots_compiled_graphs", True, 4)])
def test_the_ar_samplers_ask_for_their_compile_and_slots(monkeypatch, name, compiled, slots):
    given = []
    monkeypatch.setattr(bench_sampler, "generate", lambda sampler, model, prompts, **knobs: given.append(knobs))
    bench_sampler.run_sampler(name, tiny_model(), [[1]], SimpleNamespace(seed=0, max_new_tokens=64), slots=slots)
    assert given[0]["compile"] is compiled and given[0]["slots"] == slots and given[0]["cuda_graphs"]


def test_each_sampler_is_compared_with_the_ar_model_at_its_best_with_the_same_tools():
    """Compiling fuses a small model's many small kernels, and slots keep a batch's rows busy: a sampler's
    tokens/s are divided by the fastest AR row that ran with graphs or not as it did and compiled or not as it
    was (with slots or without); a compiled sampler with no compiled AR row is compared with the uncompiled."""
    rates = dict(block_slots_compiled_graphs=1200.0, block_slots_graphs=600.0, block=60.0, ar=20.0, ar_graphs=100.0,
                 ar_compiled_graphs=400.0, ar_slots_graphs=150.0, ar_slots_compiled_graphs=300.0)
    rows = [dict(sampler=name, batch_size=1, s_per_prompt=1.0, tokens_per_s=tps) for name, tps in rates.items()]
    bench_sampler.add_speedups(rows, 1)
    assert [r["tokens_per_s_vs_ar"] for r in rows] == [3.0, 4.0, 3.0, 1.0, 100 / 150, 1.0, 1.0, 0.75]
    uncompiled = [dict(r) for r in rows if "compiled" not in r["sampler"] or r["sampler"].startswith("block")]
    bench_sampler.add_speedups(uncompiled, 1)
    assert uncompiled[0]["tokens_per_s_vs_ar"] == 8.0
