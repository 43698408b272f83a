"""nanodllm/system.py: the precision a script runs in, and the weights it decodes with."""

import pytest
import torch

from nanodllm.config import ConfigError
from nanodllm.system import autocast, inference_weights, low_precision
from tests.test_sampler import tiny_model

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_low_precision_only_on_cuda_and_a_bad_name_is_a_config_error():
    assert low_precision(CUDA, "bfloat16") == torch.bfloat16 and low_precision(CUDA, "float16") == torch.float16
    assert low_precision(CUDA, "float32") is None and low_precision(CPU, "bfloat16") is None
    with pytest.raises(ConfigError, match="dtype must be one of"):
        autocast(CPU, "bf16")


def test_inference_weights_cast_the_linears_alone_and_change_no_output_under_autocast():
    """Under autocast a Linear casts its fp32 weight to bf16 at each call; stored in bf16 already, it gives the same
    bits. The norms and the embedding, which autocast leaves in fp32, stay fp32. CPU autocast runs Linears in bf16
    like CUDA's, so the CPU checks the numbers; the device argument only says which dtype the script would use."""
    model = tiny_model("bidirectional")
    idx = torch.randint(0, 60, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(idx)
        inference_weights(model, CUDA, "bfloat16")
        after = model(idx)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    others = [p for name, p in model.named_parameters() if not any(p is m.weight for m in linears)]
    assert others and all(p.dtype == torch.float32 for p in others)  # the embedding and the norms
    assert torch.equal(after, before)


@pytest.mark.parametrize("device, dtype", [(CPU, "bfloat16"), (CUDA, "float32")])
def test_inference_weights_leave_fp32_models_alone(device, dtype):
    model = tiny_model("bidirectional")
    inference_weights(model, device, dtype)
    assert all(p.dtype == torch.float32 for p in model.parameters())
