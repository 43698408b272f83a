"""sample.py end to end on the CPU, with an untrained model (random:tiny): --trace_out, with --show beside it,
and the figure nanodllm/plots.py draws from the trace."""

import json

import sample
from nanodllm import plots
from nanodllm.tokenizer import get_tokenizer

PROMPT = "Once upon a time"


def test_trace_out_records_every_step(tmp_path, capsys):
    path = tmp_path / "traces" / "trace.json"
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
    outputs = [part.split(" ---\n", 1)[1] for part in printed.split("\n--- sample ")[1:]]
    for call in trace["calls"]:
        for row, n in enumerate(call["samples"]):
            canvases = [frame[row] for frame in call["frames"]]
            for before, after in zip(canvases, canvases[1:]):  # a committed token is never masked or changed
                assert all(a == b for a, b in zip(before, after) if a != tok.mask_id)
            assert tok.mask_id not in canvases[-1]
            assert outputs[n].startswith(f"{PROMPT}{tok.decode(canvases[-1])}\n")

    plots.main(["--block_decoding", str(path), "--sample", "2", "--out", str(tmp_path / "decoding.png")])
    assert (tmp_path / "decoding.png").stat().st_size > 10_000
