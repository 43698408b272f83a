"""A sampler's forward pass, eager or with fixed shapes recorded once as CUDA graphs and replayed at every step.

Why graphs: a small model decodes one short block (or one token) per forward pass. Its matmuls take
microseconds, but eager PyTorch launches each of its few hundred kernels from Python, and the GPU sits waiting for
the CPU: about 6 ms per pass for the tiny preset on an H100, at any batch size. A CUDA graph records the kernels
of one pass, arguments and memory addresses included; replaying it is a single launch (the idea gpt-fast gets
from torch.compile's "reduce-overhead" mode; here it is done by hand, with nothing to compile).

The price is that a replay repeats the recording exactly: same shapes, same memory. So a graphed pass
  - reads its inputs from buffers of its own, which every call copies the new inputs into;
  - attends over the whole preallocated KV cache, with a mask that hides the columns not written yet, instead
    of over a slice whose length grows as decoding goes on;
  - writes its new keys/values at columns named by a tensor (`write_at`), not by the cache's Python-int
    length, which the recording would freeze.
One graph is recorded per input shape, the first time it is seen; a recording costs about two eager passes.
The recordings outlive a sampler call: they are kept with the model (`recordings`), one GraphedForward per KV
cache shape, so a second call with the same shapes records nothing and only replays. A benchmark can then time
the replays alone, after one untimed call that records (bench_sampler.py does). Since a graph also froze the
KV cache's memory, a later call's cache adopts the buffers the graphs were recorded with: one decoding at a time
per model and cache shape, which is how the samplers run.

The same goes for what a sampler does with a pass's logits: sample, commit, test whether a row has stopped. Run
eagerly, those few dozen small operators are launched one by one from Python after every pass, and since the
sampler waits for the stop test before it can start the next pass, the GPU idles through all of them. Handed to
DecodingStep as `then` (a function of the logits and a few tensors, with no GPU sync in it), they are recorded
into the pass's graph: a step is then one replay and one wait (gpt-fast's whole compiled decode step, by hand).

The last step is to record the pass's inputs too. A sampler whose whole state lives on the GPU and is updated
in place by each step (the block sampler's slots: every row at its own block) builds each pass's inputs from that
state with a few dozen more small kernels; GraphedForward.loop records the step entire, inputs, pass and state
update, as one graph over the state tensors themselves, so that a step is one replay with nothing copied in.

DecodingStep is what the other samplers call at every step: it builds the pass's inputs, eager or fixed-shape,
with the model's one mask builder (model.attention_mask). GraphedForward records and replays. On the CPU there
are no graphs: the same fixed-shape passes run eagerly, giving the same tokens with no speed-up. The CPU tests
check the fixed-shape inputs that way; the CUDA test checks the replays.
"""

import itertools
from collections.abc import Callable

import torch

from nanodllm.model import attention_mask


def window(t, a: int, b: int):
    """Columns [a, b) of a (B, W) tensor, or None for None (no padding: the model's defaults are exact)."""
    return None if t is None else t[:, a:b]


class DecodingStep:
    """step(x, key_mask, positions, a, end, logits_at, **state): one forward pass of a sampler over the columns
    [a, end) of its canvas x (B, W) -> the logits at `logits_at` of those columns, or then(logits, **state). With
    a KV cache the columns before a are read from it, and the cache holds the canvas's columns at the same indices.

    key_mask, positions (B, W): the canvas's key padding and RoPE positions (None when no row is padded). The
    attention rule (bidirectional, causal, block-causal) is the model's own (model.segments).
    then: None, or the sampler's bookkeeping after a pass, `then(logits, **state)` -> tensors: a hashable object
    (its settings are part of a recording's key) with no GPU sync inside; `then.graphable` says whether it may be
    recorded (a random draw from the caller's generator may not: a replay would repeat it).

    Eager (graphs=False): the model reads the new columns and attends over [0, end).
    graphs=True: with a cache, every pass reads the whole cache under a mask that hides the columns not written
    yet (>= end), so its shapes depend only on end - a (the prefill's on the prompt's length); without a cache
    (LLaDA's vanilla sampler) every pass already has the canvas's shape. Those passes go through GraphedForward:
    recorded and replayed on the GPU, run eagerly on the CPU, with `then` inside when it is graphable.
    compile=True (with graphs): each pass goes through torch.compile before it is recorded, so that the graph
    replays Inductor's fused kernels instead of the eager ones (the AR model's one-token pass; compiling costs
    seconds per shape, so it is for passes whose shape repeats).
    """

    def __init__(self, model, kv_cache=None, graphs=False, then=None, compile=False):
        if compile and not graphs:
            raise ValueError("compile compiles the pass that the CUDA graphs record: it needs graphs=True")
        self.model, self.kv_cache, self.then, self.compile = model, kv_cache, then, compile
        self.graphed = recordings(model, kv_cache) if graphs else None
        self.fixed_inputs = (None, None)  # ((a, end), inputs): every pass inside a block has the same ones
        self.canvas = None  # (columns, mask of the whole canvas or None) for the fixed-shape inputs

    def __call__(self, x, key_mask, positions, a: int, end: int, logits_at, **state):
        if self.graphed is not None and self.kv_cache is not None:
            inputs = self._fixed_shape(key_mask, positions, a, end, len(x), x.shape[1])
        else:
            # over keys [0, end): the key padding alone, to which the model adds its own attention rule
            inputs = dict(positions=window(positions, a, end), attn_mask=window(key_mask, 0, end))
        idx = x[:, a:end]
        if self.graphed is None:
            logits = self.model(idx, kv_cache=self.kv_cache, logits_at=logits_at, **inputs)
        elif self.then is not None and self.then.graphable:  # the bookkeeping inside the pass's graph
            return self.graphed(idx, logits_at=logits_at, then=self.then, state=state, compile=self.compile,
                                **inputs)
        else:
            logits = self.graphed(idx, logits_at=logits_at, compile=self.compile, **inputs)
        return logits if self.then is None else self.then(logits, **state)

    def _fixed_shape(self, key_mask, positions, a: int, end: int, B: int, W: int) -> dict:
        """The inputs of the pass over [a, end) whose shapes do not depend on how far decoding has got: keys are
        the whole cache (W columns), the mask hides those not written yet, the new keys/values go to columns
        [a, end), under the model's own attention rule (model.segments).

        They are built once per (a, end), which the passes inside a block share. A model with segments (causal,
        block_causal) needs no building at all: a query never sees a later segment, and every column of its own
        segment and the earlier ones is written before it is fed (a pass ends at a segment's end, or the AR
        sampler's one token ends the written columns), so the mask of the whole canvas, made once per call,
        holds every pass's mask in its rows [a, end): a view, no kernel launched."""
        if self.fixed_inputs[0] == (a, end):
            return self.fixed_inputs[1]
        if self.canvas is None:  # once per call: the canvas's columns and, with segments, its whole mask
            columns = torch.arange(W, device=self.kv_cache.k.device)
            segments = self.model.segments(columns)
            self.canvas = (columns, None if segments is None else
                           attention_mask(columns, columns, segments=segments, real_keys=key_mask))
        columns, canvas_mask = self.canvas
        if canvas_mask is not None:
            mask = canvas_mask[:, :, a:end]  # (B or 1, 1, T, W)
        else:  # bidirectional: hide the columns not written yet
            written = columns < end  # (W,)
            real_keys = written[None, :] if key_mask is None else key_mask & written  # (B or 1, W)
            mask = attention_mask(columns[a:end], columns, real_keys=real_keys)
        positions = columns[a:end].expand(B, -1) if positions is None else positions[:, a:end]  # (B, T)
        inputs = dict(positions=positions, attn_mask=mask.expand(B, 1, end - a, W), write_at=columns[a:end])
        self.fixed_inputs = ((a, end), inputs)
        return inputs


def recordings(model, kv_cache=None) -> "GraphedForward":
    """The GraphedForward that holds `model`'s recordings for this KV cache's shape (or for passes without a
    cache), made on first use and kept on the model, so that later sampler calls replay what earlier ones
    recorded. A recording reads the weights at their addresses: the key holds them, so weights that were moved
    or replaced get new recordings. kv_cache then adopts the buffers the recordings write to and read from."""
    store = model.__dict__.setdefault("_decoding_recordings", {})  # a plain attribute: not a buffer, not saved
    key = recording_key(model, kv_cache)
    if key not in store:
        store[key] = GraphedForward(model, kv_cache)
    graphed = store[key]
    if kv_cache is not None:
        kv_cache.k, kv_cache.v = graphed.kv_cache.k, graphed.kv_cache.v  # the memory the graphs froze
        graphed.kv_cache = kv_cache  # its length is this call's
    return graphed


def recording_key(model, kv_cache=None) -> tuple:
    """What a recording depends on besides its inputs' shapes: where the weights live, and the KV cache's shape
    and dtype (None without a cache)."""
    weights = tuple(p.data_ptr() for p in model.parameters())
    cache = None if kv_cache is None else (tuple(kv_cache.k.shape), kv_cache.k.dtype)
    return weights, cache


class GraphedForward:
    """model.forward for inputs of fixed shapes, recorded as a CUDA graph per shape and replayed.

    Call it like the model, with every input that varies as a tensor of fixed shape (None stays None): with a KV
    cache, a full (B, 1, T, S) attention mask over the whole cache and `write_at`, the (T,) cache columns the T
    new tokens are written to. With `then` (DecodingStep's), then(logits, **state) is recorded after the forward
    in the same graph, and its tensors are returned instead of the logits; `state`'s tensors are inputs like the
    others. compile=True: that pass goes through torch.compile first (one graph, fixed shapes), and its fused
    kernels are what is recorded. What comes back lives in the graph's memory and is overwritten by the next call:
    use it before calling again (the samplers do).
    """

    MODEL_INPUTS = ("idx", "positions", "attn_mask", "write_at")  # the rest of the inputs are then's state

    def __init__(self, model, kv_cache=None):
        self.model, self.kv_cache = model, kv_cache
        self.record = next(model.parameters()).is_cuda
        self.graphs = {}  # input shapes -> (input buffers, output, graph)
        self.compiled = {}  # on the CPU, input shapes -> the compiled pass, which runs there without a graph
        self.loops = {}  # a loop's key and state shapes -> (its state, output, graph) (loop)
        self.pool = torch.cuda.graph_pool_handle() if self.record else None  # memory shared by our graphs

    def __call__(self, idx, *, positions, attn_mask, logits_at, write_at=None, then=None, state=None,
                 compile=False):
        inputs = dict(idx=idx, positions=positions, attn_mask=attn_mask, write_at=write_at, **(state or {}))
        if not self.record and not compile:
            return self._forward(inputs, logits_at, then)
        key = self.shapes_key(inputs, logits_at, then) + (compile,)
        if not self.record:  # the CPU: the compiled pass, compiled once per shape, runs without a graph
            if key not in self.compiled:
                self.compiled[key] = self._pass(logits_at, then, compile)
            return self.compiled[key](**inputs)
        if key not in self.graphs:
            self.graphs[key] = self._record(inputs, self._pass(logits_at, then, compile))
        buffers, output, graph = self.graphs[key]
        for name, t in inputs.items():
            if t is not None:  # an input that is None was None at the recording too: the shapes key says so
                buffers[name].copy_(t)
        graph.replay()
        return output

    @staticmethod
    def shapes_key(inputs: dict, logits_at, then=None) -> tuple:
        """One recording per: where the logits are read (a tuple of slices, fixed per block), what is recorded
        after the forward (`then`, by its settings), the autocast dtype, and every input's shape and dtype (an
        input that is None was None at the recording too)."""
        return (repr(logits_at), then, autocast_dtype()) + shapes(inputs)

    def _forward(self, inputs, logits_at, then=None):
        logits = self.model(inputs["idx"], positions=inputs["positions"], attn_mask=inputs["attn_mask"],
                            kv_cache=self.kv_cache, write_at=inputs["write_at"], logits_at=logits_at)
        if then is None:
            return logits
        return then(logits, **{name: t for name, t in inputs.items() if name not in self.MODEL_INPUTS})

    def _pass(self, logits_at, then, compile: bool):
        """The pass as a function of its inputs' tensors, through torch.compile if asked."""
        forward = lambda **inputs: self._forward(inputs, logits_at, then)
        return torch.compile(forward, fullgraph=True, dynamic=False) if compile else forward

    def _record(self, inputs, forward):
        buffers = {name: None if t is None else t.clone() for name, t in inputs.items()}
        graph, output = record(forward, buffers, self.pool)
        return buffers, output, graph

    def loop(self, step, state: dict, key, compile: bool = False) -> tuple[dict, Callable]:
        """For a decoding loop whose whole state lives on the GPU, in `state`'s tensors, which step(**state)
        updates in place and whose output tells the host what happened (the block sampler's slots: each row's
        canvas, block and liveness). Recorded once per key (with the state's shapes) as one graph over the state
        tensors themselves: a replay reads and writes them, nothing is copied in or out, and a step is one
        launch. -> (state, run): the tensors to decode with, and run(), a replay -> step's output (the graph's
        memory: read it before the next run). The first call records with the caller's tensors; a later call
        with the same key gets those back, holding its values (as its KV cache adopts the recorded buffers).
        key: what step depends on besides the state's shapes (its settings). compile: step goes through
        torch.compile first (one graph, fixed shapes), whose fused kernels are then what is recorded.
        On the CPU: eager, the same steps (compiled too, if asked)."""
        if compile:
            step = torch.compile(step, fullgraph=True, dynamic=False)
        if not self.record:
            return state, lambda: step(**state)
        key = (key, compile, autocast_dtype()) + shapes(state)
        if key in self.loops:
            recorded, output, graph = self.loops[key]
            for name, t in state.items():
                recorded[name].copy_(t)
        else:
            graph, output = record(step, state, self.pool)
            recorded = state
            self.loops[key] = recorded, output, graph

        def run():
            graph.replay()
            return output
        return recorded, run


def flags_one_ahead(step, device):
    """Runs step() again and again and yields, as a Python bool, the 0-dim flag each run returns, having queued
    the next run before it reads one: the GPU works on run i+1 while the host waits for run i's flag, so it does
    not idle through the host's turn (the copy back, the test, the next launch). The flag goes into pinned host
    memory by an asynchronous copy queued right after its run, before the next run overwrites it (a replay
    returns its graph's memory). The caller stops at the flag it wants; by then one more run has been made,
    which must change nothing that matters (a slots' pass with nothing left changes no output)."""
    cuda = torch.device(device).type == "cuda"
    flags = [torch.empty((), dtype=torch.bool, pin_memory=cuda) for _ in range(2)]  # run i's in flags[i % 2]
    copied = [torch.cuda.Event() if cuda else None for _ in range(2)]

    def launch(i):
        flags[i % 2].copy_(step(), non_blocking=True)
        if cuda:
            copied[i % 2].record()
    launch(0)
    for i in itertools.count():
        launch(i + 1)
        if cuda:
            copied[i % 2].synchronize()
        yield bool(flags[i % 2])


def autocast_dtype():
    """The dtype the caller's autocast computes in, or None: a recording's casts are frozen into it."""
    return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None


def shapes(tensors: dict) -> tuple:
    """Each tensor's name, shape and dtype (a None tensor is left out: it was None at the recording too)."""
    return tuple((name, tuple(t.shape), t.dtype) for name, t in tensors.items() if t is not None)


def record(fn, tensors: dict, pool=None):
    """fn(**tensors) recorded as a CUDA graph that reads and writes these very tensors -> (graph, its output).
    A replay runs the recorded kernels on whatever the tensors then hold."""
    # Autocast keeps low-precision copies of the weights in a cache that is emptied when the caller's autocast
    # region ends; a graph that recorded reads of those copies would replay reads of freed memory. Recording
    # with the cache off puts the casts inside the graph instead.
    with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
                        cache_enabled=False):
        # One eager run on a side stream first, so that lazy set-up work (cuBLAS workspaces, kernel selection)
        # happens outside the recording. It runs on copies, since fn may update its tensors in place (a loop's
        # step); what it writes elsewhere (the KV cache's columns) the replay writes again, to the same values.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(**{name: None if t is None else t.clone() for name, t in tensors.items()})
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = fn(**tensors)
    return graph, output
