import json

import pytest
import torch

from nanodllm import checkpoint
from nanodllm.checkpoint import CheckpointError
from tests.conftest import tiny_model


def save(tmp_path, model, step, **kw):
    return checkpoint.save_checkpoint(tmp_path, step, model, {"batch_size": 2}, {"step": step, "x": torch.ones(3)}, **kw)


def test_round_trip(tmp_path):
    model = tiny_model()
    save(tmp_path, model, 10)
    loaded, info = checkpoint.load_model(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert info["step"] == 10 and info["train"] == {"batch_size": 2}
    state = checkpoint.load_state(tmp_path)
    assert state["step"] == 10 and torch.equal(state["x"], torch.ones(3))


def test_every_checkpoint_has_its_own_id_and_keeps_its_lineage(tmp_path):
    model = tiny_model()
    first = save(tmp_path / "base", model, 1)
    second = save(tmp_path / "base", model, 2)  # the same weights, another checkpoint: another id
    ids = [checkpoint.read_config(p)["id"] for p in (first, second)]
    assert len(set(ids)) == 2 and all(len(i) == 12 for i in ids)
    lineage = checkpoint.lineage_of(tmp_path / "base")  # a run's out_dir: its latest checkpoint
    assert lineage == dict(init_from=str(second), init_from_id=ids[1])
    save(tmp_path / "tuned", model, 1, lineage=lineage)
    assert checkpoint.read_config(tmp_path / "tuned")["lineage"] == lineage
    legacy = json.loads((second / "config.json").read_text())
    del legacy["id"]  # written before checkpoints had ids
    (second / "config.json").write_text(json.dumps(legacy))
    assert checkpoint.lineage_of(second)["init_from_id"] is None


def test_latest_pointer_and_keep(tmp_path):
    model = tiny_model()
    for step in (1, 2, 3):
        save(tmp_path, model, step, keep=2)
    assert sorted(p.name for p in tmp_path.glob("ckpt_*")) == ["ckpt_0000002", "ckpt_0000003"]
    assert checkpoint.resolve(tmp_path).name == "ckpt_0000003"


def test_a_save_killed_halfway_leaves_the_previous_checkpoint(tmp_path):
    model = tiny_model()
    save(tmp_path, model, 1)
    (tmp_path / ".ckpt_0000002.tmp").mkdir()  # what a kill during the next save leaves behind
    (tmp_path / ".ckpt_0000002.tmp" / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.resolve(tmp_path).name == "ckpt_0000001"
    checkpoint.load_model(tmp_path)
    save(tmp_path, model, 2)  # the next save cleans up and succeeds
    assert checkpoint.resolve(tmp_path).name == "ckpt_0000002"


def test_corrupt_weights_are_a_clear_error(tmp_path):
    path = save(tmp_path, tiny_model(), 1)
    (path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        checkpoint.load_model(tmp_path)
    (path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="state.pt is corrupt"):
        checkpoint.load_state(tmp_path)


def test_checkpoint_from_another_config_names_the_difference(tmp_path):
    save(tmp_path, tiny_model(), 1)
    with pytest.raises(CheckpointError, match=r"another model config:\n  n_layer: checkpoint 2, this model 3"):
        checkpoint.load_weights(tiny_model(n_layer=3), tmp_path)


def test_tensor_mismatch_is_named(tmp_path):
    path = save(tmp_path, tiny_model(), 1)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(path / "model.safetensors"))
    weights["transformer.ln_f.bias"] = weights.pop("transformer.ln_f.weight")
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['transformer.ln_f.weight'\].*unexpected \['transformer.ln_f.bias'\]"):
        checkpoint.load_model(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load_model(tmp_path / "nothing")
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="latest.json is corrupt"):
        checkpoint.resolve(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"checkpoint": "ckpt_0000009"}))
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        checkpoint.resolve(tmp_path)
