"""Training configuration: one dataclass of every knob, filled from Python config files and --key=value flags.

As in nanoGPT, a config file is plain Python (`config/tiny.py` sets `n_layer = 6` and so on) and flags override
it: `python train.py config/tiny.py --batch_size=16 --compile=False`. Unlike nanoGPT's exec-into-globals, every
name is checked: an unknown key, or a value of the wrong type, stops the run with a message that lists the valid
keys, so a typo never trains silently with the default.
"""

import ast
import dataclasses
import types
from dataclasses import dataclass, fields
from pathlib import Path


class ConfigError(ValueError):
    """An unknown key, a value of the wrong type, or a missing config file."""


@dataclass
class TrainConfig:
    # where things go
    out_dir: str = ""  # "" = out/<dataset>-<recipe>
    init_from: str = "scratch"  # "scratch", or a checkpoint directory to fine-tune from (weights only)
    resume: bool = False  # continue the run in out_dir exactly where its last checkpoint left it
    eval_interval: int = 200
    eval_iters: int = 20  # validation batches per evaluation
    log_interval: int = 10
    ckpt_interval: int = 0  # steps between checkpoints; 0 = at every evaluation
    keep_checkpoints: int = 2
    # data
    dataset: str = "tinystories"  # tinystories | fineweb | lengthtask
    data_dir: str = ""  # prepared token files; "" = data/<dataset>
    data_source: str = ""  # local text files to prepare from; "" = the Hugging Face hub
    data_seed: int = 0  # lengthtask: the seed its examples are generated from (held-out prompts fixed across seeds)
    # the training recipe (see nanodllm/recipes.py)
    recipe: str = "pretrain"  # pretrain | dllm_var | eos_pad | eos_random | ar | block_diffusion
    t_min: float = 1e-3  # noise level t ~ U(t_min, t_max)
    t_max: float = 1.0
    loss_weighting: str = "elbo"  # elbo (1/t, LLaDA/MDLM) | mean (plain mean CE over masked tokens, dLLM-Var)
    pad_token: str = "eos"  # eos_pad recipe: pad with EOS again (LLaDA) or with [PAD] (DiffuGPT project)
    pad_masked_perc: float = -1.0  # eos_pad: share of masked tokens drawn from the pads; <0 = mask them like text
    pad_anneal_steps: int = 0  # eos_pad: pad_masked_perc grows linearly from 0 over these optimizer steps
    overlong: str = "drop"  # eos_pad, packing=best_fit: a sample longer than a row is dropped or truncated
    packing: str = "stream"  # packed rows: samples back to back, straddling rows (dLLM-Var) | best_fit (kept whole)
    attention_scope: str = "row"  # packed rows: attend across the whole row (dLLM-Var) | only within the sample
    prompt_max_tokens: int = 64
    # model
    model: str = "tiny"  # a preset of nanodllm.model.PRESETS
    attention: str = ""  # "" = the recipe's default (causal for ar, block_causal for block_diffusion, else bidirectional)
    attn_block_size: int = 32  # block_diffusion / block_causal attention: tokens per block (the sampler's block)
    n_layer: int = 0  # 0 = the preset's value (likewise below)
    n_head: int = 0
    d_model: int = 0
    mlp_hidden: int = 0
    # optimisation
    batch_size: int = 32  # rows per micro-step
    block_size: int = 256  # tokens per row
    gradient_accumulation_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0 = max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "bfloat16"  # autocast dtype on CUDA: bfloat16 | float16 | float32
    compile: bool = True
    seed: int = 1337
    parallel: str = "ddp"  # with several processes: ddp | fsdp (FSDP2: weights, grads and AdamW states sharded)
    fp8: str = ""  # "" | tensorwise | rowwise: torchao float8 matmuls (GPU of capability >= 8.9; pip install torchao)
    activation_checkpointing: bool = False  # recompute each Block in backward: less memory, ~1/3 more compute


def _type_name(t) -> str:
    return t.__name__ if isinstance(t, type) else str(t)


def _check_value(key: str, value, expected):
    """Returns value converted to the field's type, or raises naming the key and both types."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"config key {key!r} must be {_type_name(expected)}, got {value!r} "
                        f"({type(value).__name__})")
    return value


def _valid_keys_message() -> str:
    return "valid keys:\n  " + "\n  ".join(
        f"{f.name} ({_type_name(f.type)}, default {f.default!r})" for f in fields(TrainConfig))


def _apply(cfg: TrainConfig, key: str, value, origin: str) -> TrainConfig:
    types_ = {f.name: f.type for f in fields(TrainConfig)}
    if key not in types_:
        raise ConfigError(f"unknown config key {key!r} in {origin}\n{_valid_keys_message()}")
    return dataclasses.replace(cfg, **{key: _check_value(key, value, types_[key])})


def _parse_flag_value(raw: str):
    """--key=3 is an int, --key=1e-3 a float, --key=True a bool, anything else that is not a literal a str."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def load_config(args: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """Applies config files (arguments ending in .py) then --key=value flags, in order. `--flag` = True."""
    cfg = base or TrainConfig()
    for arg in args:
        if not arg.startswith("--"):
            path = Path(arg)
            if not path.is_file():
                raise ConfigError(f"config file {arg} not found")
            namespace: dict = {}
            exec(compile(path.read_text(), str(path), "exec"), namespace)
            for key, value in namespace.items():
                if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue
                cfg = _apply(cfg, key, value, str(path))
        else:
            key, eq, raw = arg[2:].partition("=")
            cfg = _apply(cfg, key, _parse_flag_value(raw) if eq else True, f"flag {arg}")
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of config_to_dict, checked like any other input (a checkpoint may come from another version)."""
    cfg = TrainConfig()
    for key, value in d.items():
        cfg = _apply(cfg, key, value, "checkpoint")
    return cfg
