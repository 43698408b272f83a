"""How long the KV cache's column writes take on the GPU: index_copy_ (one list of columns for every row, what a
batch's passes write) against each row's own columns (what the block sampler's slots write), written by scatter_
into each layer's cache (what KVCache.update does) or by index_put_ into the buffer of all layers with tensor
indices (what it does under torch.compile, which writes that one in place), at the gpt2 preset's cache shape (12
layers x k and v = 24 writes per pass, 12 heads of 64, bf16). The writes are recorded in a CUDA graph and
replayed, as the samplers run them, so launch overhead is left out.

Then the AR slots' prompt copy (KVCache.write_prefix): every pass, each row's first P columns are set to its
prompt's keys and values from the prefill, or kept, by a select on the row (no branch, so it can be recorded),
eager and through torch.compile, with the gather of the rows' prompts from all prompts' prefill that feeds it.

    python scripts/bench_kv_write.py     # needs CUDA
"""
import torch

from nanodllm.model import KVCache

LAYERS, HEADS, HEAD_DIM = 12, 12, 64


def time_per_pass(write, passes_per_graph=10, replays=100) -> float:
    """Microseconds of GPU time per pass of `write` (recorded passes_per_graph times in one graph)."""
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # warm up off the default stream, as graph capture requires
        for _ in range(3):
            write()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(passes_per_graph):
            write()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * passes_per_graph)


def main():
    for rows, columns, max_len in [(1, 32, 352), (16, 32, 352), (16, 64, 384), (16, 32, 544)]:
        caches = [torch.zeros(rows, HEADS, max_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                  for _ in range(2 * LAYERS)]
        new = torch.randn(rows, HEADS, columns, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        at = torch.arange(64, 64 + columns, device="cuda")  # (T,)
        at_per_row = at.expand(rows, columns).contiguous()[:, None, :, None].expand_as(new)  # (B, K, T, D)
        stacked = [torch.zeros(LAYERS, rows, HEADS, max_len, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                   for _ in range(2)]  # k and v of every layer, as KVCache holds them
        row_index = torch.arange(rows, device="cuda")[:, None]  # (B, 1)
        at_rows, new_t = at.expand(rows, columns).contiguous(), new.transpose(1, 2)  # (B, T), (B, T, K, D)

        def put():
            for layer in range(LAYERS):
                for c in stacked:
                    c[at.new_full((1, 1), layer), row_index, :, at_rows] = new_t
        shared = time_per_pass(lambda: [c.index_copy_(2, at, new) for c in caches])
        per_row = time_per_pass(lambda: [c.scatter_(2, at_per_row, new) for c in caches])
        per_row_put = time_per_pass(put)
        print(f"rows {rows:2d}, {columns} columns, cache {max_len}: index_copy_ {shared:6.1f} us, "
              f"scatter_ {per_row:6.1f} us, index_put_ {per_row_put:6.1f} us per pass")


def prefix_copy():
    """The AR slots' per-pass prompt copy, as _decode_ar_slots does it: TinyStories' 200 prompts of at most 24
    tokens, a cache of 24 + 1024 columns (bench_sampler's max_new_tokens)."""
    prompts, P, width = 200, 24, 24 + 1024
    prompt_k, prompt_v = (torch.randn(LAYERS, prompts, HEADS, P, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                          for _ in range(2))
    for rows in (1, 16):
        kv = KVCache(LAYERS, rows, HEADS, width, HEAD_DIM, torch.bfloat16, "cuda")
        holds = torch.randint(prompts, (rows,), device="cuda")  # the prompt each row holds
        take = torch.zeros(rows, dtype=torch.bool, device="cuda")  # which rows take a new prompt this pass

        def copy():
            kv.write_prefix(take, prompt_k[:, holds], prompt_v[:, holds])
        eager = time_per_pass(copy)
        compiled = time_per_pass(torch.compile(copy))
        print(f"rows {rows:2d}, prompt copy ({P} columns of {width}): eager {eager:6.1f} us, "
              f"compiled {compiled:6.1f} us per pass")


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("error: scripts/bench_kv_write.py times GPU kernels and needs CUDA")
    main()
    prefix_copy()
