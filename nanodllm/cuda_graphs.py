"""Fixed-shape forward passes for decoding, recorded once as CUDA graphs and replayed at every step.

Why: a small model decodes one short block (or one token) per forward pass. Its matmuls take microseconds, but
eager PyTorch launches each of its few hundred kernels from Python, and the GPU sits waiting for the CPU: about
6 ms per pass for the tiny preset on an H100, at any batch size. A CUDA graph records the kernels of one pass,
arguments and memory addresses included; replaying it is a single launch (the idea gpt-fast gets from
torch.compile's "reduce-overhead" mode; here it is done by hand, with nothing to compile).

The price is that a replay repeats the recording exactly: same shapes, same memory. So a graphed pass
  - reads its inputs from buffers of its own, which every call copies the new inputs into;
  - attends over the whole preallocated KV cache, with a mask that hides the columns not written yet, instead
    of over a slice whose length grows as decoding goes on;
  - writes its new keys/values at columns named by a tensor (KVCache.slots), not by the cache's Python-int
    length, which the recording would freeze.
One graph is recorded per input shape, the first time it is seen; a recording costs about two eager passes.
The samplers (nanodllm/sampler.py) build the fixed-shape inputs; this file only records and replays.

On the CPU there are no graphs: the same fixed-shape passes run eagerly, giving the same tokens with no
speed-up. The CPU tests check the fixed-shape inputs that way; the CUDA test checks the replays.
"""

import torch


class GraphedForward:
    """model.forward for inputs of fixed shapes, recorded as a CUDA graph per shape and replayed.

    Call it like the model, with every input that varies as a tensor of fixed shape (None stays None): with a KV
    cache, a full (B, 1, T, S) attention mask over the whole cache and `slots`, the (T,) cache columns the T
    new tokens are written to. The returned logits live in the graph's memory and are
    overwritten by the next call: use them before calling again (the samplers do).
    """

    def __init__(self, model, kv_cache=None):
        self.model, self.kv_cache = model, kv_cache
        self.record = next(model.parameters()).is_cuda
        self.graphs = {}  # input shapes -> (input buffers, output, graph)
        self.pool = torch.cuda.graph_pool_handle() if self.record else None  # memory shared by our graphs

    def __call__(self, idx, *, positions, attn_mask, logits_at, slots=None):
        inputs = dict(idx=idx, positions=positions, attn_mask=attn_mask, slots=slots)
        if not self.record:
            return self._forward(inputs, logits_at)
        key = (repr(logits_at),) + tuple((name, tuple(t.shape)) for name, t in inputs.items() if t is not None)
        if key not in self.graphs:
            self.graphs[key] = self._record(inputs, logits_at)
        buffers, logits, graph = self.graphs[key]
        for name, t in inputs.items():
            if t is not None:  # an input that is None was None at the recording too: the shapes key says so
                buffers[name].copy_(t)
        graph.replay()
        return logits

    def _forward(self, inputs, logits_at):
        if self.kv_cache is not None:
            self.kv_cache.slots = inputs["slots"]
        try:
            return self.model(inputs["idx"], positions=inputs["positions"], attn_mask=inputs["attn_mask"],
                              kv_cache=self.kv_cache, logits_at=logits_at)
        finally:
            if self.kv_cache is not None:
                self.kv_cache.slots = None  # eager passes (the prefill) write after the committed length again

    def _record(self, inputs, logits_at):
        buffers = {name: None if t is None else t.clone() for name, t in inputs.items()}
        # Autocast keeps low-precision copies of the weights in a cache that is emptied when the caller's autocast
        # region ends; a graph that recorded reads of those copies would replay reads of freed memory. Recording
        # with the cache off puts the casts inside the graph instead.
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                            enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False):
            # One eager run on a side stream first, so that lazy set-up work (cuBLAS workspaces, kernel
            # selection) happens outside the recording. It writes the same cache columns the replay will.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._forward(buffers, logits_at)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = self._forward(buffers, logits_at)
        return buffers, logits, graph
