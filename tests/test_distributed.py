"""Tests of data parallelism and nanodllm/parallel.py on the CPU: two gloo processes (torch.multiprocessing).

One spawn (a module fixture) runs both layouts on a tiny model and a fixed synthetic data set whose rows are split
between the ranks by hand: plain DDP, and FSDP2 with activation checkpointing and gradient clipping. Each must
reach the parameters that one process reaches on the whole batch, and FSDP's full-state checkpoint, written by
2 ranks, must resume in 1 process and take the same next step. About 10 s, most of it starting the processes.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from nanodllm import parallel
from nanodllm.model import ModelConfig, Transformer, preset

WORLD, ROWS, T, STEPS, CLIP = 2, 8, 16, 3, 0.5


def tiny_model():
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32, mlp_hidden=48,
                                   max_seq_len=32, mask_id=63, eos_id=62, pad_id=62))


def batch(step):
    """The global batch of a step: the same on every rank (each takes its rows)."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, 64, (ROWS, T), generator=g), torch.randint(0, 64, (ROWS, T), generator=g)


def train_step(model, optimizer, step, rows=slice(None)):
    idx, targets = batch(step)
    loss = F.cross_entropy(model(idx[rows]).flatten(0, 1), targets[rows].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def optimizer_for(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def one_process(steps):
    model = tiny_model()
    optimizer = optimizer_for(model)
    for step in range(steps):
        train_step(model, optimizer, step)
    return model, optimizer


def _worker(rank, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    rows = slice(rank * ROWS // WORLD, (rank + 1) * ROWS // WORLD)

    model = tiny_model()
    ddp, optimizer = DDP(model), optimizer_for(model)
    for step in range(STEPS):
        train_step(ddp, optimizer, step, rows)
    if rank == 0:
        save_file(model.state_dict(), f"{out_dir}/ddp.safetensors")

    model = tiny_model()
    parallel.apply_activation_checkpointing(model)
    parallel.apply_fsdp(model, torch.device("cpu"))
    assert model.transformer.wte.weight.to_local().shape == (64 // WORLD, 32)  # each rank holds its half
    optimizer = optimizer_for(model)
    for step in range(STEPS):
        train_step(model, optimizer, step, rows)
    weights, optimizer_state = parallel.full_state_dicts(model, optimizer)  # every rank gathers
    if rank == 0:
        save_file(weights, f"{out_dir}/fsdp.safetensors")
        torch.save(optimizer_state, f"{out_dir}/fsdp_optimizer.pt")
    dist.barrier()  # as train.py: rank 0 writes its files after the last collective; tear down together
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dist")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out_dir)), nprocs=WORLD)
    return out_dir


def assert_same_parameters(weights: dict, model):
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    for name, t in expected.items():
        torch.testing.assert_close(weights[name], t, rtol=1e-4, atol=1e-5, msg=name)


def test_ddp_matches_one_process(two_ranks):
    reference, _ = one_process(STEPS)
    assert_same_parameters(load_file(str(two_ranks / "ddp.safetensors")), reference)
    assert not torch.equal(reference.transformer.wte.weight, tiny_model().transformer.wte.weight)  # it trained


def test_fsdp_matches_one_process_and_resumes_on_one(two_ranks):
    reference, reference_optimizer = one_process(STEPS)
    weights = load_file(str(two_ranks / "fsdp.safetensors"))
    assert_same_parameters(weights, reference)  # FSDP + activation checkpointing + global-norm clipping
    # the 2-rank checkpoint in one process: weights and AdamW moments, then the same next step
    model = tiny_model()
    optimizer = optimizer_for(model)
    model.load_state_dict(weights)  # as train.py resumes: full weights into the model before any sharding
    parallel.load_full_optimizer_state(model, optimizer,
                                       torch.load(two_ranks / "fsdp_optimizer.pt", weights_only=True))
    train_step(model, optimizer, STEPS)
    train_step(reference, reference_optimizer, STEPS)
    assert_same_parameters(model.state_dict(), reference)


def test_activation_checkpointing_keeps_gradients_and_names():
    plain, checkpointed = tiny_model(), tiny_model()
    parallel.apply_activation_checkpointing(checkpointed)
    assert plain.state_dict().keys() == checkpointed.state_dict().keys()
    idx, targets = batch(0)
    for m in (plain, checkpointed):
        F.cross_entropy(m(idx).flatten(0, 1), targets.flatten()).backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_positional_optimizer_state_is_refused():
    model, optimizer = one_process(1)
    with pytest.raises(ValueError, match="optimizer.load_state_dict"):
        parallel.load_full_optimizer_state(model, optimizer, optimizer.state_dict())


def test_fp8_refuses_the_cpu():
    with pytest.raises(RuntimeError, match="compute capability 8.9"):
        parallel.apply_fp8(tiny_model(), "tensorwise")
    with pytest.raises(ValueError, match="rowwise"):
        parallel.apply_fp8(tiny_model(), "e4m3")


def test_memory_estimate():
    config = preset("llada-8b")
    ddp = parallel.memory_estimate(config, "ddp", 8, batch_size=1, seq_len=4096)
    fsdp = parallel.memory_estimate(config, "fsdp", 8, batch_size=1, seq_len=4096)
    assert 8.0e9 < ddp["n_params"] < 8.1e9
    assert ddp["parameters"] + ddp["gradients"] + ddp["optimizer"] == pytest.approx(16 * ddp["n_params"] / 2**30)
    assert fsdp["optimizer"] == pytest.approx(ddp["optimizer"] / 8)
    checkpointed = parallel.memory_estimate(config, "fsdp", 8, 1, 4096, activation_checkpointing=True)
    assert checkpointed["activations"] < fsdp["activations"] / 4
    assert "GiB" in parallel.format_memory_estimate(fsdp)
