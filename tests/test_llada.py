"""Tests of nanodllm/llada.py on tiny LLaDA-format checkpoints written here (CPU, a few seconds).

The hand-written checkpoint spells LLaDA's tensor names literally (as published: reference.md) and copies them
into our model by an explicit table, so a mistake in llada.py's rename cannot hide behind a round trip.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nanodllm.checkpoint import CheckpointError
from nanodllm.llada import (config_from_llada, from_pretrained, llada_tokenizer, load_llada_state_dict,
                            save_llada_format)
from nanodllm.model import ModelConfig, Transformer, preset

MASK, EOS = 63, 62


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32, mlp_hidden=48, max_seq_len=64,
               mask_id=MASK, eos_id=EOS, pad_id=EOS)
    return Transformer(ModelConfig(**{**cfg, **overrides})).eval()


def logits(model, seed=1):
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(idx)


# The published LLaDA-8B config.json (the fields of GSAI-ML/LLaDA-8B-Base, auto_map left out).
LLADA_8B_CONFIG = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "use_cache": False, "vocab_size": 126464,
    "weight_tying": False,
}


def test_llada_8b_config_is_our_preset():
    assert config_from_llada(LLADA_8B_CONFIG) == preset("llada-8b")


@pytest.mark.parametrize("field, value", [("include_bias", True), ("weight_tying", True),
                                          ("block_type", "sequential"), ("activation_type", "swiglu"),
                                          ("layer_norm_type", "default"), ("scale_logits", True)])
def test_unsupported_config_flag_is_named(field, value):
    with pytest.raises(CheckpointError, match=field):
        config_from_llada({**LLADA_8B_CONFIG, field: value})


def test_missing_config_field_is_named():
    with pytest.raises(CheckpointError, match="rope_theta"):
        config_from_llada({k: v for k, v in LLADA_8B_CONFIG.items() if k != "rope_theta"})


@pytest.mark.parametrize("shard_size", [None, 20_000])
def test_save_then_load_gives_the_same_logits(tmp_path, shard_size):
    model = tiny_model()
    save_llada_format(model, tmp_path, shard_size=shard_size)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    if shard_size is None:
        assert files == ["model.safetensors"] and not (tmp_path / "model.safetensors.index.json").exists()
    else:
        assert len(files) > 2 and files[-1] == f"model-{len(files):05d}-of-{len(files):05d}.safetensors"
    loaded = from_pretrained(tmp_path, dtype=torch.float32)
    assert loaded.config == model.config
    assert torch.equal(logits(loaded), logits(model))
    assert from_pretrained(tmp_path).transformer.wte.weight.dtype == torch.bfloat16  # the default dtype


def hand_written_checkpoint(directory):
    """A LLaDA checkpoint written with LLaDA's literal names and config fields, in two shards with an index;
    returns our model holding the same weights, copied by an explicit table."""
    L, C, H, F, V = 2, 32, 4, 48, 64
    g = torch.Generator().manual_seed(3)
    tensors = {"model.transformer.wte.weight": torch.randn(V, C, generator=g),
               "model.transformer.ln_f.weight": 1 + 0.1 * torch.randn(C, generator=g),
               "model.transformer.ff_out.weight": 0.2 * torch.randn(V, C, generator=g)}
    shapes = dict(attn_norm=(C,), ff_norm=(C,), q_proj=(C, C), k_proj=(C, C), v_proj=(C, C), attn_out=(C, C),
                  ff_proj=(F, C), up_proj=(F, C), ff_out=(C, F))
    for i in range(L):
        for name, shape in shapes.items():
            t = torch.randn(shape, generator=g)
            tensors[f"model.transformer.blocks.{i}.{name}.weight"] = 1 + 0.1 * t if len(shape) == 1 else 0.2 * t
    config = {**LLADA_8B_CONFIG, "d_model": C, "n_heads": H, "n_kv_heads": H, "n_layers": L,
              "mlp_hidden_size": F, "vocab_size": V, "embedding_size": V, "max_sequence_length": 64,
              "mask_token_id": MASK, "eos_token_id": EOS, "pad_token_id": EOS, "rope_theta": 10000.0}
    (directory / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    files = {"model-00001-of-00002.safetensors": names[:7], "model-00002-of-00002.safetensors": names[7:]}
    for file, part in files.items():
        save_file({n: tensors[n] for n in part}, str(directory / file), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {n: f for f, part in files.items() for n in part}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))

    native = Transformer(ModelConfig(vocab_size=V, n_layer=L, n_head=H, n_kv_head=H, d_model=C, mlp_hidden=F,
                                     max_seq_len=64, rope_theta=10000.0, mask_id=MASK, eos_id=EOS, pad_id=EOS))
    ours = {"transformer.wte.weight": "model.transformer.wte.weight",
            "transformer.ln_f.weight": "model.transformer.ln_f.weight",
            "transformer.ff_out.weight": "model.transformer.ff_out.weight"}
    for i in range(L):
        for sub, names_ in (("", ("attn_norm", "ff_norm")), ("attn.", ("q_proj", "k_proj", "v_proj", "attn_out")),
                            ("mlp.", ("ff_proj", "up_proj", "ff_out"))):
            ours.update({f"transformer.blocks.{i}.{sub}{n}.weight": f"model.transformer.blocks.{i}.{n}.weight"
                         for n in names_})
    native.load_state_dict({k: tensors[v] for k, v in ours.items()})
    return native.eval()


def test_hand_written_sharded_checkpoint_loads(tmp_path):
    native = hand_written_checkpoint(tmp_path)
    assert len(load_llada_state_dict(tmp_path)) == 3 + 2 * 9
    loaded = from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(logits(loaded), logits(native))


def rewrite(path, edit):
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_renamed_tensor_is_named(tmp_path):
    save_llada_format(tiny_model(), tmp_path)
    rewrite(tmp_path / "model.safetensors", lambda t: t.__setitem__(
        "model.transformer.blocks.1.attn.q_proj.weight", t.pop("model.transformer.blocks.1.q_proj.weight")))
    with pytest.raises(CheckpointError) as e:
        from_pretrained(tmp_path)
    assert "missing model.transformer.blocks.1.q_proj.weight" in str(e.value)
    assert "unexpected model.transformer.blocks.1.attn.q_proj.weight" in str(e.value)


def test_misshaped_tensor_is_named(tmp_path):
    save_llada_format(tiny_model(), tmp_path, shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    name = "model.transformer.blocks.0.up_proj.weight"
    rewrite(tmp_path / index["weight_map"][name], lambda t: t.__setitem__(name, torch.zeros(47, 32)))
    with pytest.raises(CheckpointError, match=r"wrong shape model.transformer.blocks.0.up_proj.weight: \(47, 32\)"):
        from_pretrained(tmp_path)


def test_index_that_disagrees_with_its_shards(tmp_path):
    save_llada_format(tiny_model(), tmp_path, shard_size=20_000)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.transformer.extra.weight"] = next(iter(index["weight_map"].values()))
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model.transformer.extra.weight"):
        from_pretrained(tmp_path)


def test_not_a_directory_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        from_pretrained(tmp_path / "absent")
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="could not fetch GSAI-ML/LLaDA-8B-Base"):
        from_pretrained("GSAI-ML/LLaDA-8B-Base")


def test_export_refuses_attention_llada_lacks(tmp_path):
    with pytest.raises(ValueError, match="block_causal"):
        save_llada_format(tiny_model(attention="block_causal"), tmp_path)


# ---- the tokenizer -------------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>"]
CORPUS = ["the cat sat on the mat", "a dog ran in the park", "<|eot_id|> is the end of a turn",
          "masks look like <|mdm_mask|> here", "hello world, hello cat"] * 20


def tiny_tokenizer_dir(directory):
    """A byte-level BPE tokenizer.json trained here, beside a config.json whose ids point at its specials."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(directory / "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    model = tiny_model(vocab_size=320, mask_id=ids["<|mdm_mask|>"], eos_id=ids["<|eot_id|>"],
                       pad_id=ids["<|endoftext|>"])
    save_llada_format(model, directory)
    return tok, ids


def test_tokenizer_ids_and_plain_text(tmp_path):
    hf, ids = tiny_tokenizer_dir(tmp_path)
    tok = llada_tokenizer(tmp_path)
    assert (tok.eos_id, tok.mask_id, tok.pad_id) == (ids["<|eot_id|>"], ids["<|mdm_mask|>"], ids["<|endoftext|>"])
    assert tok.vocab_size == 320 and tok.n_tokens == hf.get_vocab_size()
    for text in ["the cat sat on the mat", "hello world, a dog!", "", "  spaces  and\nnewlines ü"]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids  # what tokenizers gives
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(["the cat", "a dog"]) == [tok.encode("the cat"), tok.encode("a dog")]


def test_special_token_text_in_user_input_stays_ordinary(tmp_path):
    hf, ids = tiny_tokenizer_dir(tmp_path)
    tok = llada_tokenizer(tmp_path)
    text = "user says <|eot_id|> and <|mdm_mask|> and <|endoftext|>"
    assert set(ids.values()) <= set(hf.encode(text, add_special_tokens=False).ids)  # the trap we avoid
    encoded = tok.encode(text)
    assert not set(ids.values()) & set(encoded)
    assert tok.decode(encoded) == text
    assert tok.decode([tok.eos_id]) == "<|eot_id|>"  # a real special id is shown by name


def test_tokenizer_ids_must_exist(tmp_path):
    tiny_tokenizer_dir(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "mask_token_id": 319}))
    with pytest.raises(CheckpointError, match="mask id 319"):
        llada_tokenizer(tmp_path)
