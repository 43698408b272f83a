"""data/distill.py: a teacher's continuations of the training prompts (a causal one's greedy decoding, a diffusion
one's block sampler), written as local text."""

import importlib.util
import math
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

from nanodllm.checkpoint import load_model, save_checkpoint
from nanodllm.metrics import judge_perplexity
from nanodllm.prepare import load_split, prepare, read_documents
from nanodllm.sampler import generate
from nanodllm.tokenizer import get_tokenizer
from tests.conftest import tiny_model

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "distill.py"
spec = importlib.util.spec_from_file_location("distill", SCRIPT)
distill = importlib.util.module_from_spec(spec)
spec.loader.exec_module(distill)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Tiny checkpoints (untrained): causal, and two diffusion models."""
    root = tmp_path_factory.mktemp("teachers")
    for attention in ("causal", "bidirectional", "block_causal"):
        save_checkpoint(root / attention, 1, tiny_model(attention=attention), {}, {})
    return root


def run(capsys, *argv):
    """distill.main's (exit message or None, stdout)."""
    try:
        distill.main([str(a) for a in argv])
        message = None
    except SystemExit as e:
        message = str(e.code)
    return message, capsys.readouterr().out


def test_documents_keep_only_continuations_that_stop():
    tok = get_tokenizer()
    prompt = tok.encode("Tom had a red ball.")
    ended, cut, empty = tok.encode(" He played.") + [tok.eos_id], tok.encode(" He ran and ran"), [tok.eos_id]
    docs, counts = distill.documents(tok, [prompt] * 3, [ended, cut, empty])
    assert docs == ["Tom had a red ball. He played."] and counts["no_eos"] == 2 and counts["repetitive"] == 0


def test_documents_leave_out_loops_above_max_repetition():
    """A continuation that loops (most of its 4-grams seen before) is left out once max_repetition is below its
    rate; one that does not repeat, and one too short to have a 4-gram, are kept. The kept ones' mean rate is
    reported."""
    tok = get_tokenizer()
    prompt = tok.encode("Tom had a red ball.")
    loop = tok.encode(" He ran." * 8) + [tok.eos_id]
    story, short = tok.encode(" He played with it all day in the park.") + [tok.eos_id], [7, tok.eos_id]
    docs, counts = distill.documents(tok, [prompt] * 3, [loop, story, short])
    assert len(docs) == 3 and counts["repetition"] > 0.3  # 1 keeps all: the loop's rate pulls the mean up
    docs, counts = distill.documents(tok, [prompt] * 3, [loop, story, short], max_repetition=0.2)
    assert docs == [tok.decode(prompt + story[:-1]), tok.decode(prompt + short[:-1])]
    assert (counts["no_eos"], counts["repetitive"], counts["unlikely"], counts["repetition"]) == (0, 1, 0, 0.0)


def test_documents_leave_out_stories_above_max_judge_ppl():
    """Given the judge's (summed NLL, tokens) per story, a story whose perplexity exp(NLL / tokens) is above the
    bound is left out and counted; the kept ones' perplexity is pooled over their tokens, and their 90th percentile
    is the smallest story perplexity that 9 in 10 of them are at or below. Stories left out for another reason are
    not counted twice."""
    tok = get_tokenizer()
    prompt = tok.encode("Tom had a red ball.")
    story = tok.encode(" He played.") + [tok.eos_id]
    scores = [(math.log(3.0) * 4, 4), (math.log(9.0) * 2, 2), (math.log(5.0) * 6, 6), (100.0, 3)]
    conts = [story, story, story, story[:-1]]  # the last one has no EOS (and an awful score)
    docs, counts = distill.documents(tok, [prompt] * 4, conts, scores=scores, max_judge_ppl=5.0)
    assert len(docs) == 2 and (counts["no_eos"], counts["unlikely"]) == (1, 1)
    assert counts["judge_ppl"] == pytest.approx(math.exp((math.log(3.0) * 4 + math.log(5.0) * 6) / 10))
    assert counts["judge_ppl_p90"] == pytest.approx(5.0)
    docs, counts = distill.documents(tok, [prompt] * 4, conts, scores=scores)  # no bound: all that end are kept
    assert len(docs) == 3 and counts["unlikely"] == 0 and counts["judge_ppl_p90"] == pytest.approx(9.0)
    ten = [(math.log(q), 1) for q in range(1, 11)]  # perplexities 1..10: 9 of 10 are at most 9
    assert distill.documents(tok, [prompt] * 10, [story] * 10, scores=ten)[1]["judge_ppl_p90"] == pytest.approx(9)
    assert math.isnan(distill.documents(tok, [prompt], [story])[1]["judge_ppl"])  # no judge, no perplexity


def test_story_scores_are_the_judges_perplexity_of_the_text_without_eos(tiny_data, teachers):
    """Each story's score is what bench_sampler's judge gives the response: the continuation without its EOS,
    after the prompt (metrics.judge_perplexity), one row each."""
    judge, _ = load_model(teachers / "causal")
    tok = get_tokenizer()
    prompts = [p for p, _ in load_split(tiny_data, "train").prompt_pairs(3)]
    conts = [tok.encode(" He played.") + [tok.eos_id], tok.encode(" The end"), [tok.eos_id]]
    scores = distill.story_scores(judge, prompts, conts, nullcontext())
    expected = judge_perplexity(judge, prompts, [conts[0][:-1], conts[1], []])
    assert [nll for nll, _ in scores] == pytest.approx(expected["row_nll"])
    assert [tokens for _, tokens in scores] == expected["row_tokens"] == [len(conts[0]) - 1, len(conts[1]), 0]


def test_a_judge_bounds_the_written_stories(tiny_data, teachers, tmp_path, capsys, monkeypatch):
    """With --judge the summary gives the kept stories' judge perplexity; --max_judge_ppl between the stories'
    own perplexities keeps exactly those at or below it."""
    tok = get_tokenizer()
    endings = [tok.encode(" The end."), tok.encode(" Then the dog ran home and slept.")]
    monkeypatch.setattr(distill, "generate", lambda name, model, prompts, **knobs:
                        ([endings[len(p) % 2] + [tok.eos_id] for p in prompts], None))
    judge, _ = load_model(teachers / "causal")
    prompts = [p for p, _ in load_split(tiny_data, "train").prompt_pairs(8)]
    conts = [endings[len(p) % 2] + [tok.eos_id] for p in prompts]
    ppl = [math.exp(nll / n) for nll, n in distill.story_scores(judge, prompts, conts, nullcontext())]
    bound = sorted(ppl)[len(ppl) // 2]
    out, argv = tmp_path / "distilled", [f"--teacher={teachers / 'causal'}", f"--data_dir={tiny_data}",
                                         f"--out_dir={tmp_path / 'distilled'}", "--max_docs=8", "--dtype=float32",
                                         f"--judge={teachers / 'causal'}"]
    message, printed = run(capsys, *argv)
    assert message is None and "8 teacher stories" in printed and "judge perplexity" in printed
    assert f"9 in 10 at most {sorted(ppl)[-1]:.2f}" in printed  # 8 stories: the 90th percentile is the largest
    message, printed = run(capsys, *argv, f"--max_judge_ppl={bound}")
    kept = [tok.decode(p + c[:-1]) for p, c, q in zip(prompts, conts, ppl) if q <= bound]
    assert message is None and 0 < len(kept) < 8
    assert f"{8 - len(kept)} above judge perplexity {bound}" in printed
    assert read_documents(out / "train.txt.gz") == kept


@pytest.mark.parametrize("teacher, sampler", [("causal", "ar"), ("block_causal", "block")])
def test_teacher_stories_are_its_own_decoding_in_prompt_order(tiny_data, teachers, teacher, sampler):
    """Batched and in any order of prompt lengths, each continuation is what the teacher's sampler gives that
    prompt alone: the AR model's greedy decoding, a diffusion model's block sampler at the threshold."""
    model, _ = load_model(teachers / teacher)
    prompts = [p for p, _ in load_split(tiny_data, "train").prompt_pairs(6)]
    got = distill.teacher_stories(model, prompts, batch_size=4, max_new_tokens=8, threshold=0.5, ctx=nullcontext())
    alone = [generate(sampler, model, [p], max_new_tokens=8, threshold=0.5)[0][0] for p in prompts]
    assert got == alone and len({len(p) for p in prompts}) > 1


def test_written_text_prepares_back_to_the_same_prompts_and_validation(tiny_data, teachers, tmp_path, capsys,
                                                                       monkeypatch):
    """The teacher is replaced by a fixed continuation (an untrained model never stops): one prompt in three gets
    a continuation cut short, which is left out. Read back by prepare, every kept document starts with its
    original prompt's tokens, and the validation documents are the original ones."""
    tok = get_tokenizer()
    ending = tok.encode(" The end.")

    def fake_generate(name, model, prompts, **knobs):
        assert name == "ar" and knobs["max_new_tokens"] == 16
        return [ending + ([tok.eos_id] if len(p) % 3 else []) for p in prompts], None

    monkeypatch.setattr(distill, "generate", fake_generate)
    out = tmp_path / "distilled"
    message, printed = run(capsys, f"--teacher={teachers / 'causal'}", f"--data_dir={tiny_data}",
                           f"--out_dir={out}", "--max_docs=20", "--batch_size=8", "--max_new_tokens=16")
    assert message is None
    prompts = [p for p, _ in load_split(tiny_data, "train").prompt_pairs(20)]
    kept = [p for p in prompts if len(p) % 3]
    assert 0 < len(kept) < len(prompts) and f"left out: {len(prompts) - len(kept)} without EOS" in printed
    assert read_documents(out / "train.txt.gz") == [tok.decode(p + ending) for p in kept]
    val = load_split(tiny_data, "val")
    assert read_documents(out / "valid.txt.gz") == [tok.decode(val.doc(i).tolist()[:-1]) for i in range(val.n_docs)]
    prepare("tinystories", tmp_path / "prepared", source=out)
    again = load_split(tmp_path / "prepared", "train")
    assert [p for p, _ in again.prompt_pairs(len(kept))] == kept
    assert again.doc(0).tolist() == kept[0] + ending + [tok.eos_id]
    assert load_split(tmp_path / "prepared", "val").tokens.tolist() == val.tokens.tolist()


def test_real_docs_are_written_unchanged_beside_the_teachers(tiny_data, teachers, tmp_path, capsys, monkeypatch):
    """--real_docs=N adds the first N prompted training documents as they are, in extra/, which prepare reads
    after the teacher's stories; a later run without it leaves no real text behind."""
    tok = get_tokenizer()
    monkeypatch.setattr(distill, "generate", lambda name, model, prompts, **knobs:
                        ([tok.encode(" The end.") + [tok.eos_id] for _ in prompts], None))
    out, argv = tmp_path / "distilled", [f"--teacher={teachers / 'causal'}", f"--data_dir={tiny_data}",
                                         f"--out_dir={tmp_path / 'distilled'}", "--max_docs=4"]
    message, printed = run(capsys, *argv, "--real_docs=5")
    assert message is None and "4 teacher stories" in printed and "5 real ones" in printed
    train = load_split(tiny_data, "train")
    real = [tok.decode(p + r) for p, r in train.prompt_pairs(5)]
    assert read_documents(out / "extra" / "real.txt.gz") == real
    prepare("tinystories", tmp_path / "prepared", source=out)
    again = load_split(tmp_path / "prepared", "train")
    assert again.n_docs == 9 and again.doc(4).tolist() == train.doc(0).tolist()
    message, printed = run(capsys, *argv)
    assert message is None and "0 real ones" in printed and not (out / "extra" / "real.txt.gz").exists()


@pytest.mark.parametrize("teacher", ["causal", "bidirectional"])
def test_a_teacher_that_never_stops_writes_nothing(tiny_data, teachers, tmp_path, capsys, teacher):
    out = tmp_path / "distilled"
    message, _ = run(capsys, f"--teacher={teachers / teacher}", f"--data_dir={tiny_data}", f"--out_dir={out}",
                     "--max_docs=4", "--max_new_tokens=4")
    assert message.startswith("error: none of the 4 continuations was kept (4 without EOS") and not out.exists()


@pytest.mark.parametrize("case", ["no teacher", "no data", "too long", "threshold", "no judge", "judge not causal"])
def test_bad_input_is_one_error_line(tiny_data, teachers, tmp_path, capsys, case):
    args = {"no teacher": (tmp_path / "nothing", tiny_data, 8, 0.9, teachers / "causal"),
            "no data": (teachers / "causal", tmp_path / "nothing", 8, 0.9, teachers / "causal"),
            "too long": (teachers / "causal", tiny_data, 1000, 0.9, teachers / "causal"),
            "threshold": (teachers / "block_causal", tiny_data, 8, 1.5, teachers / "causal"),
            "no judge": (teachers / "causal", tiny_data, 8, 0.9, tmp_path / "nothing"),
            "judge not causal": (teachers / "causal", tiny_data, 8, 0.9, teachers / "block_causal")}[case]
    message, _ = run(capsys, f"--teacher={args[0]}", f"--data_dir={args[1]}", f"--out_dir={tmp_path / 'out'}",
                     "--max_docs=2", f"--max_new_tokens={args[2]}", f"--threshold={args[3]}", f"--judge={args[4]}")
    assert message.startswith("error: ") and "\n" not in message and not (tmp_path / "out").exists()
    expected = {"no teacher": "nothing", "no data": "nothing", "too long": "max_seq_len",
                "threshold": "threshold must be in [0, 1]", "no judge": "nothing",
                "judge not causal": "--judge must be a causal"}[case]
    assert expected in message


def test_runs_as_a_script(tiny_data, teachers, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), f"--teacher={teachers / 'causal'}",
                             f"--data_dir={tiny_data}", f"--out_dir={tmp_path / 'out'}", "--max_docs=2",
                             "--max_new_tokens=4"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: none of the 2 continuations was kept")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, expected", [("--max_docs=0", "a positive integer"),
                                            ("--batch_size=0", "a positive integer"),
                                            ("--max_new_tokens=-1", "a positive integer"),
                                            ("--max_repetition=1.5", "in [0, 1]"),
                                            ("--real_docs=-1", "0 or more"),
                                            ("--max_judge_ppl=0.5", "a perplexity, at least 1"),
                                            ("--max_judge_ppl=nan", "a perplexity, at least 1")])
def test_a_value_out_of_range_is_a_usage_error(tiny_data, teachers, tmp_path, capsys, flag, expected):
    with pytest.raises(SystemExit) as e:
        distill.main([f"--teacher={teachers / 'causal'}", f"--data_dir={tiny_data}", f"--out_dir={tmp_path}",
                      f"--judge={teachers / 'causal'}", flag])
    assert e.value.code == 2 and f"{flag.split('=')[0]} must be {expected}" in capsys.readouterr().err


def test_max_judge_ppl_without_a_judge_is_a_usage_error(tiny_data, teachers, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        distill.main([f"--teacher={teachers / 'causal'}", f"--data_dir={tiny_data}", f"--out_dir={tmp_path}",
                      "--max_judge_ppl=4"])
    assert e.value.code == 2 and "--max_judge_ppl needs --judge" in capsys.readouterr().err
