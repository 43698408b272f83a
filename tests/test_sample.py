"""sample.py end to end with an untrained model (random:tiny), on the CPU (--slots on a GPU too): --trace_out, with
--show beside it, and the figure nanodllm/plots.py draws from the trace."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sample
from nanodllm import plots
from nanodllm.tokenizer import get_tokenizer
from tests.test_cuda_graphs import CUDA

PROMPT = "Once upon a time"
ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--init_from=random:tiny", "--max_new_tokens=6", "--block_size=4", "--device=cpu"]


def test_trace_out_records_every_step(tmp_path, capsys, monkeypatch):
    path = tmp_path / "traces" / "trace.json"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # --show draws only on a terminal
    sample.main(["--init_from=random:tiny", f"--prompt={PROMPT}", "--num_samples=3", "--batch_size=2",
                 "--max_new_tokens=10", "--block_size=4", "--device=cpu", "--show", "--show_delay=0",
                 f"--trace_out={path}"])
    printed = capsys.readouterr().out
    trace = json.loads(path.read_text())
    tok = get_tokenizer()
    assert trace["sampler"] == "block" and trace["knobs"]["block_size"] == 4 and trace["knobs"]["threshold"] == 0.9
    assert (trace["mask_id"], trace["eos_id"]) == (tok.mask_id, tok.eos_id)
    assert trace["samples"] == [{"prompt": PROMPT, "prompt_ids": tok.encode(PROMPT)}] * 3
    assert [call["samples"] for call in trace["calls"]] == [[0, 1], [2]]  # one generate call per batch
    frames = [frame for call in trace["calls"] for frame in call["frames"]]
    assert all(len(frame) == len(call["samples"]) for call in trace["calls"] for frame in call["frames"])
    assert printed.count(sample.LiveView.CLEAR) == len(frames)  # --show redrew the canvas at the same steps

    # What each sample printed, after its "--- sample n, ... ---" line.
    outputs = [part.split(" ---\n", 1)[1].replace("\033[1m", "").replace("\033[0m", "")  # bold on a terminal
               for part in printed.split("\n--- sample ")[1:]]
    for call in trace["calls"]:
        for row, n in enumerate(call["samples"]):
            canvases = [frame[row] for frame in call["frames"]]
            for before, after in zip(canvases, canvases[1:]):  # a committed token is never masked or changed
                assert all(a == b for a, b in zip(before, after) if a != tok.mask_id)
            assert tok.mask_id not in canvases[-1]
            assert outputs[n].startswith(f"{PROMPT}{tok.decode(canvases[-1])}\n")

    plots.main(["--block_decoding", str(path), "--sample", "2", "--out", str(tmp_path / "decoding.png")])
    assert (tmp_path / "decoding.png").stat().st_size > 10_000


def test_show_draws_only_on_a_terminal(capsys):
    sample.main(QUICK + [f"--prompt={PROMPT}", "--show", "--show_delay=0"])
    captured = capsys.readouterr()
    assert sample.LiveView.CLEAR not in captured.out and "--- sample 1, prompt 1" in captured.out
    assert captured.err == "note: --show draws only on a terminal; not drawing\n"


def test_each_batch_is_printed_as_soon_as_it_is_done(capsys, monkeypatch):
    printed_before = []  # what was on the screen when each batch began
    real = sample.generate

    def spy(*args, **kwargs):
        printed_before.append(capsys.readouterr().out)
        return real(*args, **kwargs)

    monkeypatch.setattr(sample, "generate", spy)
    sample.main(QUICK + [f"--prompt={PROMPT}", "--num_samples=3", "--batch_size=2"])
    assert len(printed_before) == 2 and "--- sample" not in printed_before[0]
    assert "--- sample 1, prompt 1" in printed_before[1] and "--- sample 2, prompt 1" in printed_before[1]
    assert "--- sample 3, prompt 1" in capsys.readouterr().out


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_slots_print_what_each_sample_gets_alone(tmp_path, capsys, device):
    """--slots decodes every sample in one call, rows refilled as they finish; each sample's text is the one it gets
    decoded alone (float32: the tests of the sampler say why it is the same). On a GPU the slots take the fastest
    path, their pass compiled and replayed as one CUDA graph."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nTom had a red ball. He\nLily\nThe sun was")
    common = ["--init_from=random:tiny:block_causal", f"--prompt_file={prompts}", "--max_new_tokens=12",
              f"--device={device}", "--dtype=float32"]
    fastest = ["--cuda_graphs", "--compile"] if device == "cuda" else []

    def samples(flags):  # each sample's header and text, and the stats line printed last
        sample.main(common + flags)
        printed = capsys.readouterr().out
        return [part.split("\n")[:2] for part in printed.split("\n--- sample ")[1:]], printed.splitlines()[-1]

    alone, alone_stats = samples(["--batch_size=1"])
    together, stats = samples(["--slots=2"] + fastest)
    assert len(alone) == 4 and together == alone
    assert alone_stats.startswith("4 rows, 48 tokens (mean 12.0), 48 forward passes")  # a call per sample
    assert stats.startswith("4 rows, 48 tokens (mean 12.0), 24 forward passes")  # one call, two rows per pass

    for flag in ("--show", f"--trace_out={tmp_path / 'trace.json'}"):  # they follow the rows of one batch
        with pytest.raises(SystemExit):
            sample.main(common + ["--slots=2", flag])
        assert "error: --slots decodes every sample in one call" in capsys.readouterr().err


def test_ar_slots_print_what_each_sample_gets_alone(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once upon a time\nTom had a red ball. He\nLily\nThe sun was")
    common = ["--init_from=random:tiny:causal", f"--prompt_file={prompts}", "--max_new_tokens=12", "--device=cpu"]
    texts = []
    for flags in (["--batch_size=1"], ["--slots=2"]):
        sample.main(common + flags)
        texts.append(capsys.readouterr().out.split("\n--- sample ")[1:])
    assert len(texts[0]) == 4 and [t.split("\n")[:2] for t in texts[1]] == [t.split("\n")[:2] for t in texts[0]]


@pytest.mark.parametrize("args, message", [
    (["--init_from=out/no_such_run"], "error: no checkpoint at out/no_such_run"),
    (QUICK + ["--prompt_file=PROMPTS"], "error: prompt file PROMPTS is not UTF-8 (invalid byte at offset 3)"),
    (QUICK + ["--prompt=@missing.txt"], "error: prompt file missing.txt does not exist"),
    (["--init_from=random:tiny", "--device=cuda"], "error: device 'cuda' asked for, but CUDA is not available"),
    (QUICK + ["--slots=2"], "error: slots needs a block_causal model and cache=True"),
    (["--init_from=random:tiny:block_causal", "--device=cpu", "--sampler=llada", "--slots=2"],
     "error: --slots is the block and ar samplers', not llada's"),
])
def test_mistakes_give_one_error_line(tmp_path, args, message):
    if "--device=cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"Caf\xe9 au lait\n")
    args = [a.replace("PROMPTS", str(prompts)) for a in args]
    message = message.replace("PROMPTS", str(prompts))
    result = subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and result.stderr.startswith(message) and "Traceback" not in result.stderr
