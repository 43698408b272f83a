"""LLaDA's published checkpoints (GSAI-ML/LLaDA-8B-Base, -Instruct) in our Transformer, without LLaDA's remote code.

A LLaDA checkpoint directory, as the Hugging Face hub serves it:

    config.json                          LLaDA's config, in OLMo's field names (d_model, n_heads, mlp_hidden_size...)
    model-00001-of-00006.safetensors     the weights, in shards (or one model.safetensors)
    model.safetensors.index.json         {"weight_map": {tensor name: shard file}}
    tokenizer.json                       the tokenizer, read by the `tokenizers` package

LLaDA's network is ours: the same layers under the same names, except that we group each block's attention and
MLP weights in sub-modules. LLaDA's `model.transformer.blocks.3.q_proj.weight` is our
`transformer.blocks.3.attn.q_proj.weight`; `llada_name` is that rename, written once and used both ways.

LLaDA's config also carries OLMo's architecture switches (block_type, include_bias, weight_tying, ...). We read
those that change what the network computes and refuse a value our model cannot represent, naming the field. The
others (dropout rates, init scheme, flash-attention and precision hints) change how LLaDA was trained, not what
it computes, and are ignored.

    model = from_pretrained("GSAI-ML/LLaDA-8B-Instruct", device="cuda")  # or a local directory
    tok = llada_tokenizer("GSAI-ML/LLaDA-8B-Instruct")
"""

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanodllm.checkpoint import CheckpointError
from nanodllm.model import ModelConfig, Rotary, Transformer

# LLaDA's architecture switches, each with the values our model implements (the first is what we write). An
# absent field is taken to be fine: save_pretrained writes every field, so only hand-written configs omit some.
ARCHITECTURE = {
    "block_type": ("llama",),  # separate q/k/v projections and a gated MLP with up_proj
    "activation_type": ("silu",),  # the gate of SwiGLU (OLMo's "swiglu" would halve ff_out's input instead)
    "layer_norm_type": ("rms",),
    "layer_norm_with_affine": (True,),
    "bias_for_layer_norm": (False, None),  # None = follow include_bias
    "include_bias": (False,),
    "include_qkv_bias": (False,),
    "attention_layer_norm": (False,),  # QK-norm
    "input_emb_norm": (False,),
    "scale_logits": (False,),  # logits / sqrt(d_model)
    "weight_tying": (False,),  # output head = input embedding
    "rope": (True,),
    "rope_scaling": (None,),
    "alibi": (False,),
    "clip_qkv": (None,),
    "block_group_size": (1,),  # >1 nests the blocks under other names (block_groups.N)
}

# LLaDA's config field -> ours, for the numbers that set the network's shape and its special tokens.
FIELDS = {
    "d_model": "d_model", "n_heads": "n_head", "n_kv_heads": "n_kv_head", "n_layers": "n_layer",
    "mlp_hidden_size": "mlp_hidden", "embedding_size": "vocab_size", "max_sequence_length": "max_seq_len",
    "rope_theta": "rope_theta", "rms_norm_eps": "norm_eps", "mask_token_id": "mask_id",
    "eos_token_id": "eos_id", "pad_token_id": "pad_id",
}
REQUIRED = ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "embedding_size", "rope_theta", "mask_token_id",
            "eos_token_id")


def config_from_llada(config_json: dict) -> ModelConfig:
    """Our ModelConfig from LLaDA's config.json (a dict); CheckpointError naming any field we cannot follow."""
    c = dict(config_json)
    for field, accepted in ARCHITECTURE.items():
        if c.get(field, accepted[0]) not in accepted:
            raise CheckpointError(f"LLaDA config.json has {field}={c[field]!r}; nanodllm's model implements only "
                                  f"{' or '.join(repr(a) for a in accepted)}")
    # LLaDA's own defaults for the fields it lets you leave out:
    if c.get("embedding_size") is None:  # embedding rows; vocab_size may be the smaller, unpadded count
        c["embedding_size"] = c.get("vocab_size")
    if c.get("n_kv_heads") is None:
        c["n_kv_heads"] = 1 if c.get("multi_query_attention") else c.get("n_heads")
    if c.get("mlp_hidden_size") is None and c.get("mlp_ratio") is not None and c.get("d_model") is not None:
        c["mlp_hidden_size"] = c["mlp_ratio"] * c["d_model"]
    if c.get("pad_token_id") is None:
        c["pad_token_id"] = c.get("eos_token_id")
    missing = [f for f in REQUIRED if c.get(f) is None]
    if missing:
        raise CheckpointError(f"LLaDA config.json lacks {', '.join(missing)}")
    try:
        return ModelConfig(attention="bidirectional",
                           **{ours: c[theirs] for theirs, ours in FIELDS.items() if c.get(theirs) is not None})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"LLaDA config.json does not make a valid model: {e}") from e


def read_llada_config(directory: Path) -> ModelConfig:
    path = Path(directory) / "config.json"
    try:
        return config_from_llada(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is missing or corrupt ({e})") from e


def llada_config(config: ModelConfig) -> dict:
    """The inverse of config_from_llada: LLaDA's config.json for our config (only bidirectional models)."""
    if config.attention != "bidirectional":
        raise ValueError(f"LLaDA's format has no {config.attention!r} attention; only bidirectional models export")
    ours = vars(config)
    return dict(architectures=["LLaDAModelLM"], model_type="llada", vocab_size=config.vocab_size,
                **{theirs: ours[o] for theirs, o in FIELDS.items()},
                **{field: accepted[0] for field, accepted in ARCHITECTURE.items()})


def llada_name(name: str) -> str:
    """Our parameter name -> LLaDA's: `transformer.blocks.3.attn.q_proj.weight` ->
    `model.transformer.blocks.3.q_proj.weight` (likewise `.mlp.`); top-level names only gain `model.`."""
    return "model." + re.sub(r"\.(attn|mlp)\.", ".", name)


# ---- reading -------------------------------------------------------------------------------------------------

def _header(path: Path) -> dict:
    """{name: shape} of a safetensors file, read from its header without loading a tensor."""
    with safe_open(str(path), framework="pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def _shards(directory: Path) -> dict[Path, dict]:
    """Each weight file of a checkpoint directory with its {name: shape}. A sharded checkpoint's index must
    agree with its shards."""
    index_path, single = directory / "model.safetensors.index.json", directory / "model.safetensors"
    if not index_path.is_file():
        if not single.is_file():
            raise CheckpointError(f"{directory} holds neither model.safetensors nor model.safetensors.index.json")
        return {single: _header(single)}
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path} is corrupt ({e})") from e
    listed: dict[Path, set[str]] = {}
    for name, file in weight_map.items():
        listed.setdefault(directory / file, set()).add(name)
    shards = {}
    for path, names in listed.items():
        if not path.is_file():
            raise CheckpointError(f"{index_path} lists {path.name}, which is missing")
        shards[path] = _header(path)
        if shards[path].keys() != names:
            raise CheckpointError(f"{index_path} disagrees with {path.name}: listed but absent "
                                  f"{sorted(names - shards[path].keys())}, present but unlisted "
                                  f"{sorted(shards[path].keys() - names)}")
    return shards


def load_llada_state_dict(path, device="cpu", dtype=None) -> dict:
    """All tensors of a LLaDA-format checkpoint directory, under LLaDA's names, read shard by shard straight to
    `device` (in `dtype` if given), so host memory never holds more than one tensor beyond what is kept."""
    out = {}
    for file, names in _shards(Path(path)).items():
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for name in names:
                out[name] = f.get_tensor(name) if dtype is None else f.get_tensor(name).to(dtype)
    return out


def _local_dir(path_or_hub_id) -> Path:
    """A local directory as it is; otherwise a hub id ("GSAI-ML/LLaDA-8B-Base") fetched with huggingface_hub
    (config, index, weights and tokenizer files only: LLaDA's remote code is not needed)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"{name} is not a checkpoint directory (nor a hub id like GSAI-ML/LLaDA-8B-Base)")
    try:
        from huggingface_hub import snapshot_download  # only for users who download from the hub
    except ImportError as e:
        raise CheckpointError(f"{name} is not a local directory, and fetching it from the Hugging Face hub needs "
                              f"huggingface_hub: pip install huggingface_hub") from e
    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # offline, unknown repo, gated, ...: say so, keep the hub's own error
        raise CheckpointError(f"could not fetch {name} from the Hugging Face hub ({type(e).__name__}: {e}); "
                              f"download it where the hub is reachable and pass its directory") from e


def from_pretrained(path_or_hub_id, device="cpu", dtype=torch.bfloat16) -> Transformer:
    """A LLaDA checkpoint (a local directory or a hub id) as our Transformer, in eval mode.

    Names and shapes are checked against the config from the headers before any weight is read: a missing,
    unexpected (a renamed one is both) or mis-shaped tensor is an error naming it. The model is built on the meta
    device, without memory, and takes the loaded tensors as its parameters (load_state_dict(assign=True)), so
    the weights exist once, on `device`. dtype=torch.float32 for fine-tuning with our fp32-weights + autocast setup.
    """
    directory = _local_dir(path_or_hub_id)
    config = read_llada_config(directory)
    with torch.device("meta"):
        model = Transformer(config)
    state = model.state_dict()
    ours = {llada_name(name): name for name in state}
    expected = {llada_name(name): tuple(t.shape) for name, t in state.items()}
    found = {name: shape for shard in _shards(directory).values() for name, shape in shard.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = [f"{n}: {found[n]} in the checkpoint, {expected[n]} from config.json"
             for n in sorted(expected.keys() & found.keys()) if found[n] != expected[n]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{directory} does not fit its config.json:"
                              + "".join(f"\n  missing {n}" for n in missing)
                              + "".join(f"\n  unexpected {n}" for n in unexpected)
                              + "".join(f"\n  wrong shape {w}" for w in wrong))
    weights = load_llada_state_dict(directory, device, dtype)
    model.load_state_dict({ours[n]: t for n, t in weights.items()}, assign=True)
    with torch.device(device):  # RoPE's tables are computed, not stored: build them for real
        model.rotary = Rotary(config.head_dim, config.max_seq_len, config.rope_theta)
    return model.eval()


# ---- writing -------------------------------------------------------------------------------------------------

def save_llada_format(model: Transformer, directory, shard_size: int | None = None):
    """Writes `model` in LLaDA's layout: config.json in LLaDA's fields, weights under LLaDA's names, in shards
    of at most `shard_size` bytes (one tensor may exceed it) with model.safetensors.index.json, or in one
    model.safetensors. from_pretrained reads it back; LLaDA's own remote code reads it once its .py files and
    config's auto_map are added."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(llada_config(model.config), indent=2))
    tensors = {llada_name(k): v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt"}  # what transformers expects in a safetensors header
    if shard_size is None:
        save_file(tensors, str(directory / "model.safetensors"), metadata=metadata)
        return directory
    shards, size = [{}], 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_size:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / file), metadata=metadata)
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = dict(metadata=dict(total_size=total), weight_map=weight_map)
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return directory


# ---- the tokenizer -------------------------------------------------------------------------------------------

class LLaDATokenizer:
    """LLaDA's tokenizer.json (through the `tokenizers` package) with nanodllm.tokenizer.Tokenizer's interface.

    User text never becomes a special id. `tokenizers`' own encode matches added tokens in the text before
    anything else, even with add_special_tokens=False (that flag only skips template tokens such as BOS), so a
    prompt containing the characters "<|eot_id|>" would become the real end-of-turn id. `encode` instead runs
    the tokenizer's stages itself, normalizer -> pre-tokenizer -> BPE model, and skips the added-token table
    where the special tokens live: "<|eot_id|>" in user text becomes the BPE pieces of its characters. For text
    without added-token strings this is exactly what tokenizers' encode gives.
    """

    def __init__(self, tok, config: ModelConfig):
        self.tok = tok
        self.eos_id, self.mask_id, self.pad_id = config.eos_id, config.mask_id, config.pad_id
        self.vocab_size = config.vocab_size  # embedding rows
        self.n_tokens = tok.get_vocab_size(with_added_tokens=True)  # ids that have a token

    def encode(self, text: str) -> list[int]:
        tok = self.tok
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        pieces = tok.pre_tokenizer.pre_tokenize_str(text) if tok.pre_tokenizer is not None else [(text, None)]
        return [t.id for piece, _ in pieces for t in tok.model.tokenize(piece)]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """Special ids are written as their token text ("<|eot_id|>"), so a reader can see them."""
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def llada_tokenizer(path) -> LLaDATokenizer:
    """The tokenizer of a LLaDA checkpoint (a directory or a hub id): tokenizer.json, with the EOS, mask and pad
    ids of its config.json (the ids the model was trained with). Needs `pip install tokenizers`."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ImportError("LLaDA's tokenizer needs the tokenizers package: pip install tokenizers") from e
    directory = _local_dir(path)
    config = read_llada_config(directory)
    try:
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as e:  # missing, or written by a tokenizers version this one cannot read
        raise CheckpointError(f"cannot read {directory / 'tokenizer.json'} ({e})") from e
    for role, i in (("eos", config.eos_id), ("mask", config.mask_id), ("pad", config.pad_id)):
        if tok.id_to_token(i) is None:
            raise CheckpointError(f"config.json's {role} id {i} is not a token of {directory / 'tokenizer.json'}")
    return LLaDATokenizer(tok, config)
