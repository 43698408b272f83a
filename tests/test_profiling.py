"""nanodllm/profiling.py: the kernel-time arithmetic of bench.py --profile and its count of CUDA runtime calls,
on made-up kernels and calls."""

from types import SimpleNamespace

import pytest
import torch

from nanodllm.profiling import gpu_kernels, host_calls, kind, summarize, table


def test_kernels_are_sorted_into_matmul_attention_and_the_rest():
    assert kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert kind("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT") == "matmul"
    assert kind("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3") == "attention"
    assert kind("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0") == "other"
    assert kind("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamW>") == "other"


def test_time_per_kind_idle_gaps_and_top_kernels_per_step():
    # two steps, microseconds: a gemm, a 10 us gap, attention overlapping a norm, a 30 us gap, a gemm
    kernels = [("gemm_a", 0, 100), ("flash_fwd", 110, 150), ("rmsnorm", 140, 160), ("gemm_a", 190, 290)]
    s = summarize(kernels, steps=2, top=2, gaps=1)
    assert s["window_ms_per_step"] == pytest.approx(0.290 / 2)
    assert s["idle_ms_per_step"] == pytest.approx(0.040 / 2)  # the overlap counts as busy, once
    assert s["matmul_ms_per_step"] == pytest.approx(0.1) and s["attention_ms_per_step"] == pytest.approx(0.02)
    assert s["other_ms_per_step"] == pytest.approx(0.01)
    assert s["matmul_share"] == pytest.approx(200 / 260)
    assert [k["name"] for k in s["top_kernels"]] == ["gemm_a", "flash_fwd"]
    assert s["kernels_per_step"] == 2 and [k["launches_per_step"] for k in s["top_kernels"]] == [1, 0.5]
    assert s["largest_gaps"] == [dict(us=30, after="rmsnorm", before="gemm_a")]
    assert "idle gaps 0.02 ms" in table(s)


def test_no_kernels_no_division_by_zero():
    s = summarize([], steps=3)
    assert s["kernel_ms_per_step"] == 0 and s["matmul_share"] == 0 and s["top_kernels"] == []


def test_host_calls_tell_syncs_from_queued_copies_and_sum_the_cpu_time_in_each():
    """A .tolist() of a GPU tensor is a queued copy then a wait: one copy, one sync. A graph replay's input copy
    is a copy alone; a kernel launch is neither. Every runtime call's duration counts toward its kind's CPU time;
    PyTorch's own operators (aten::...) are not runtime calls."""
    calls = [("cudaMemcpyAsync", 5.0), ("cudaStreamSynchronize", 900.0), ("cudaMemcpyAsync", 7.0),
             ("cudaLaunchKernel", 4.0), ("cudaMemcpy", 30.0), ("cudaGraphLaunch", 2500.0), ("aten::mm", 8000.0)]
    c = host_calls(calls)
    assert c["syncs"] == {"cudaMemcpy": 1, "cudaStreamSynchronize": 1} and c["copies"] == {"cudaMemcpyAsync": 2}
    assert c["host_us"] == {"cudaGraphLaunch": 2500.0, "cudaLaunchKernel": 4.0, "cudaMemcpy": 30.0,
                            "cudaMemcpyAsync": 12.0, "cudaStreamSynchronize": 900.0}
    assert c["longest_us"] == {"cudaGraphLaunch": 2500.0, "cudaLaunchKernel": 4.0, "cudaMemcpy": 30.0,
                               "cudaMemcpyAsync": 7.0, "cudaStreamSynchronize": 900.0}


def test_the_table_names_the_cpu_time_in_runtime_calls_when_there_is_any():
    s = summarize([("gemm", 0, 10)], steps=1)
    assert "runtime calls" not in table(s)
    s.update(host_ms_per_step={"cudaGraphLaunch": 2.5}, longest_host_call_us={"cudaGraphLaunch": 2400.0})
    assert "cudaGraphLaunch 2.500 ms" in table(s) and "cudaGraphLaunch 2400 us" in table(s)


def test_gpu_kernels_leave_out_the_cpu_and_the_annotations_drawn_over_the_kernels():
    """AdamW's record_function range shows on the GPU's timeline over its own kernel: counted, the optimizer's
    time would count twice."""
    def event(name, start, end, device, annotation=False):
        return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type=device,
                               is_user_annotation=annotation)
    gpu, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [event("aten::mm", 0, 50, cpu), event("gemm", 5, 40, gpu),
              event("Optimizer.step#AdamW.step", 45, 80, gpu, annotation=True),
              event("multi_tensor_apply", 50, 78, gpu)]
    assert gpu_kernels(events) == [("gemm", 5, 40), ("multi_tensor_apply", 50, 78)]
    assert summarize(gpu_kernels(events), steps=1)["kernel_ms_per_step"] == pytest.approx(0.063)
