"""Checkpoints: weights in safetensors, everything else in a weights-only torch file, written atomically.

A run's out_dir holds numbered checkpoint directories and a pointer to the newest:

    out_dir/ckpt_0000400/model.safetensors   the weights (safe to load: no pickled code)
    out_dir/ckpt_0000400/config.json         the model's shape, the training config, the checkpoint's id and its
                                             lineage (the id of the checkpoint a fine-tune started from)
    out_dir/ckpt_0000400/state.pt            optimizer, step, loader cursor, RNG states (torch.load weights_only)
    out_dir/latest.json                      {"checkpoint": "ckpt_0000400"}

A checkpoint is written into a temporary directory, renamed into place, and only then does latest.json move to
it (os.replace, atomic on POSIX). A run killed at any moment leaves the previous checkpoint untouched and
latest.json pointing at it. Older checkpoints beyond `keep` are deleted after the pointer has moved.
"""

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nanodllm.model import ModelConfig, Transformer


class CheckpointError(RuntimeError):
    pass


def _write_json_atomic(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(out_dir, step: int, model, train_config: dict, state: dict, keep: int = 2,
                    weights: dict | None = None, lineage: dict | None = None) -> Path:
    """Writes ckpt_{step}/ atomically and points latest.json at it. state: anything torch.save(weights_only)
    can round-trip (tensors, numbers, strings, lists, dicts): optimizer state dict, loader cursor, RNG.
    weights: the full state dict when the model itself holds only a shard (FSDP); default model.state_dict().
    lineage: where the run's weights started (see lineage_of), kept in config.json.

    Every checkpoint gets a fresh random id. Two trainings of the same config and seed on a GPU do not give the
    same weights, so a path or a config does not say which base a fine-tune started from; the id does."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt_{step:07d}"
    final, tmp = out_dir / name, out_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = model.state_dict() if weights is None else weights
    weights = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    save_file(weights, str(tmp / "model.safetensors"))
    _write_json_atomic(tmp / "config.json", dict(model=model.config_dict(), train=train_config, step=step,
                                                 id=uuid.uuid4().hex[:12], lineage=lineage))
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)  # a checkpoint of the same step from a crashed earlier attempt
    os.replace(tmp, final)
    _write_json_atomic(out_dir / "latest.json", dict(checkpoint=name, step=step))
    for old in sorted(out_dir.glob("ckpt_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve(path) -> Path:
    """A checkpoint directory, or a run's out_dir (then its latest checkpoint)."""
    path = Path(path)
    if (path / "latest.json").is_file():
        try:
            path = path / json.loads((path / "latest.json").read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{path / 'latest.json'} is corrupt ({e})") from e
    for name in ("model.safetensors", "config.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"no checkpoint at {path}: {name} is missing (expected a ckpt_* directory "
                                  f"or a run's out_dir holding latest.json)")
    return path


def read_config(path) -> dict:
    path = resolve(path)
    try:
        return json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'config.json'} is corrupt ({e})") from e


def lineage_of(init_from) -> dict:
    """A fine-tune's lineage: the checkpoint it starts from, by path and by id (None for checkpoints written
    before ids were)."""
    path = resolve(init_from)
    return dict(init_from=str(path), init_from_id=read_config(path).get("id"))


def load_weights(model, path):
    """Loads a checkpoint's weights into a model of the same shape; a mismatch is an error that says what
    differs (config fields, then tensor names and shapes) rather than a wall of state_dict keys."""
    path = resolve(path)
    saved = read_config(path)["model"]
    current = model.config_dict()
    # These hold no weights: max_seq_len sizes the RoPE tables (a model may be loaded with a longer one), and the
    # attention pattern may change in a fine-tune (a bidirectional base fine-tuned with block_diffusion's blocks),
    # and so may output_shift (an AR base adapted as DiffuGPT does; a checkpoint older than the key has none).
    differing = {k: (saved.get(k), v) for k, v in current.items()
                 if saved.get(k) != v and k not in ("max_seq_len", "attention", "attn_block_size", "output_shift")}
    if differing:
        lines = "\n".join(f"  {k}: checkpoint {a!r}, this model {b!r}" for k, (a, b) in differing.items())
        raise CheckpointError(f"checkpoint {path} is from another model config:\n{lines}")
    try:
        weights = load_file(str(path / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / 'model.safetensors'} is corrupt or unreadable ({e})") from e
    expected = model.state_dict()
    missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
    wrong_shape = [k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(f"{path / 'model.safetensors'} does not fit the model: missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}, wrong shape {sorted(wrong_shape)}")
    model.load_state_dict(weights)
    return model


def load_model(path, device="cpu", max_seq_len=None):
    """(model, info) from a checkpoint; info = {"model": ..., "train": ..., "step": ...} from its config.json.

    The model's max_seq_len is the row length it was trained on (checkpoints written before training set it so
    hold a longer one: the training config's block_size caps it), so the samplers refuse canvases past the
    positions the model has seen. max_seq_len: build RoPE tables at least this long, to sample beyond the trained
    length on purpose (bench_sampler.py does)."""
    info = read_config(path)
    try:
        config = ModelConfig(**info["model"])
        trained = (info.get("train") or {}).get("block_size")
        config.max_seq_len = max(min(config.max_seq_len, trained or config.max_seq_len), max_seq_len or 0)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {resolve(path)} has an unreadable model config ({e})") from e
    model = Transformer(config)
    load_weights(model, path)
    return model.to(device).eval(), info


def load_state(path) -> dict:
    """The training state (optimizer, step, loader, RNG) of a checkpoint, loaded weights-only."""
    path = resolve(path) / "state.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, keep the original error
        raise CheckpointError(f"{path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
