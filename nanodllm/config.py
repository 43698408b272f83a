"""Training configuration: one dataclass of every knob, filled from Python config files and --key=value flags.

As in nanoGPT, a config file is plain Python (`config/tiny.py` sets `recipe = "dllm_var"` and so on) and flags
override it: `python train.py config/tiny.py --batch_size=16 --compile=False` (or `--batch_size 16`). Unlike
nanoGPT's exec-into-globals, every name is checked: an unknown key ("did you mean batch_size?"), or a value of the
wrong type, stops the run, so a typo never trains silently with the default. A flag's text takes its key's type:
`--out_dir=2024` is a str, `--max_iters=1e2` the int 100. `python train.py --help` lists every key, with its
default and the comment beside it below.
"""

import ast
import dataclasses
import difflib
import inspect
import re
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
    overwrite: bool = False  # a fresh run may replace the checkpoints already in out_dir (else it refuses)
    eval_interval: int = 200  # steps between evaluations on the validation split
    eval_iters: int = 20  # validation batches per evaluation
    log_interval: int = 10  # steps between log lines
    ckpt_interval: int = 0  # steps between checkpoints; 0 = at every evaluation
    keep_checkpoints: int = 2  # older checkpoints are deleted
    # data
    dataset: str = "tinystories"  # tinystories | fineweb | lengthtask
    data_dir: str = ""  # prepared token files; "" = data/<dataset>
    data_source: str = ""  # local text file or folder to prepare from; "" = what data_dir holds, else the hub
    data_seed: int = 0  # lengthtask: the seed its examples are generated from (held-out prompts fixed across seeds)
    # the training recipe (see nanodllm/recipes.py)
    recipe: str = "pretrain"  # pretrain | dllm_var | eos_pad | eos_random | ar | block_diffusion | block_pad
    t_min: float = 1e-3  # noise level t ~ U(t_min, t_max)
    t_max: float = 1.0  # (see t_min)
    loss_weighting: str = "elbo"  # elbo (1/t, LLaDA/MDLM) | mean (plain mean CE over masked tokens, dLLM-Var)
    pad_token: str = "eos"  # eos_pad recipe: pad with EOS again (LLaDA) or with [PAD] (DiffuGPT project)
    pad_masked_perc: float = -1.0  # eos_pad: share of masked tokens drawn from the pads; <0 = mask them like text
    pad_anneal_steps: int = 0  # eos_pad: pad_masked_perc grows linearly from 0 over these optimizer steps
    overlong: str = "drop"  # eos_pad, packing=best_fit: a sample longer than a row is dropped or truncated
    packing: str = "stream"  # packed rows: samples back to back, straddling rows (dLLM-Var) | best_fit (kept whole)
    attention_scope: str = "row"  # packed rows: attend across the whole row (dLLM-Var) | only within the sample
    certainty_weight: float = 0.0  # dParallel's certainty forcing: weight of the entropy where it is right; 0 = off
    certainty_temperature: float = 0.5  # the temperature of that entropy (recipes.certainty_forcing)
    prompt_max_tokens: int = 64  # preparing data: a longer first sentence is not used as a prompt
    # model
    model: str = "tiny"  # a preset of nanodllm.model.PRESETS
    attention: str = ""  # "" = the recipe's default (causal for ar, block_causal for block recipes, else bidirectional)
    attn_block_size: int = 32  # block recipes / block_causal attention: tokens per block (the sampler's block)
    output_shift: bool = False  # predict each token from the output of the one before it (DiffuGPT; an AR base)
    n_layer: int = 0  # 0 = the preset's value (likewise below)
    n_head: int = 0  # attention heads
    d_model: int = 0  # width
    mlp_hidden: int = 0  # hidden width of the SwiGLU MLP
    # optimisation
    batch_size: int = 32  # rows per micro-step
    block_size: int = 256  # tokens per row
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step
    max_iters: int = 2000  # optimizer steps
    learning_rate: float = 1e-3  # peak, after warmup
    min_lr: float = 1e-4  # the end of the cosine decay
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int = 0  # 0 = max_iters
    weight_decay: float = 0.1  # AdamW, on matrices and embeddings only
    beta1: float = 0.9  # AdamW
    beta2: float = 0.95  # AdamW
    grad_clip: float = 1.0  # 0 = off
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "bfloat16"  # autocast dtype on CUDA: bfloat16 | float16 | float32
    compile: bool = True  # torch.compile the model and loss (on the CPU it needs a C compiler)
    compile_mode: str = "default"  # torch.compile mode of the loss: default | max-autotune-no-cudagraphs | ...
    loss_gather: str = "mask"  # how the loss finds the masked positions: mask | indices | dense (training.loss_function)
    seed: int = 1337  # initial weights, masks and data order
    parallel: str = "ddp"  # with several processes: ddp | fsdp (FSDP2: weights, grads and AdamW states sharded)
    fp8: str = ""  # "" | tensorwise | rowwise: torchao float8 matmuls (GPU of capability >= 8.9; pip install torchao)
    activation_checkpointing: bool = False  # recompute each Block in backward: less memory, ~1/3 more compute


def _type_name(t) -> str:
    return t.__name__ if isinstance(t, type) else str(t)


def help_text() -> str:
    """Every key with its type, default and meaning: the comment beside it in TrainConfig's source, under the
    section comments there. The source is the one place a key is documented."""
    defaults = {f.name: f for f in fields(TrainConfig)}
    width = max(len(f"--{f.name}={f.default!r}") for f in defaults.values())
    lines = ["usage: python train.py [config.py ...] [--key=value | --key value | --flag ...]",
             "Config files are applied in order, then flags. Keys, with their defaults:"]
    for line in inspect.getsource(TrainConfig).splitlines():
        section = re.fullmatch(r"    # (.*)", line)
        key = re.match(r"    (\w+): \w+ = .*?(?:  # (.*))?$", line)
        if section:
            lines.append(f"\n{section.group(1)}:")
        elif key and key.group(1) in defaults:
            f = defaults[key.group(1)]
            flag = f"--{f.name}={f.default!r}"
            lines.append(f"  {flag:<{width}}  {_type_name(f.type):<5}  {key.group(2) or ''}".rstrip())
    return "\n".join(lines)


def _check_value(key: str, value, expected):
    """Returns value converted to the field's type, or raises naming the key and both types. An int where a float
    is expected is a float; a whole float where an int is expected (1e2) is an int."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ConfigError(f"config key {key!r} must be {_type_name(expected)}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _field_type(key: str, origin: str):
    types_ = {f.name: f.type for f in fields(TrainConfig)}
    if key not in types_:
        # a near spelling (bacth_size), or the initials of a key (lr)
        close = difflib.get_close_matches(key, types_, n=1) + [
            name for name in types_ if "".join(word[0] for word in name.split("_")) == key]
        hint = f"did you mean {close[0]}?" if close else "python train.py --help lists every key"
        raise ConfigError(f"unknown config key {key!r} in {origin}\n{hint}")
    return types_[key]


def _parse_flag_value(raw: str, expected):
    """A flag's text as its field's type: a str field takes the text as it is (--out_dir=2024 is "2024"); the
    others read it as a Python literal (3, 1e-3, True), and text that is none stays text (and fails the check)."""
    if expected is str:
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def load_config(args: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """Applies config files (arguments ending in .py) then flags, in order. A flag is --key=value or --key value;
    a bool flag alone (--resume) is True."""
    cfg = base or TrainConfig()
    args = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            path = Path(arg)
            if not path.is_file():
                raise ConfigError(f"config file {arg} not found (a flag is written --key=value)")
            namespace: dict = {}
            exec(compile(path.read_text(), str(path), "exec"), namespace)
            for key, value in namespace.items():
                if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
                    continue
                cfg = dataclasses.replace(cfg, **{key: _check_value(key, value, _field_type(key, str(path)))})
            continue
        key, eq, raw = arg[2:].partition("=")
        expected = _field_type(key, f"flag {arg}")
        if not eq:  # --key value, or a bare bool flag (which may still take an explicit True/False)
            takes_next = args and (args[0] in ("True", "False") if expected is bool else not args[0].startswith("--"))
            if takes_next:
                raw = args.pop(0)
            elif expected is not bool:
                raise ConfigError(f"flag --{key} needs a value: --{key}=VALUE or --{key} VALUE")
        value = _parse_flag_value(raw, expected) if eq or raw else True
        cfg = dataclasses.replace(cfg, **{key: _check_value(key, value, expected)})
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> TrainConfig:
    """The inverse of config_to_dict, checked like any other input (a checkpoint may come from another version)."""
    cfg = TrainConfig()
    for key, value in d.items():
        cfg = dataclasses.replace(cfg, **{key: _check_value(key, value, _field_type(key, "checkpoint"))})
    return cfg
