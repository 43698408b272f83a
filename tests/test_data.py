import numpy as np
import pytest
import torch

from nanodllm.data import PackedLoader
from nanodllm.prepare import load_split
from nanodllm.tokenizer import EOS_ID, PAD_ID


def stream_of(loader, n_batches):
    rows = [loader.next_batch() for _ in range(n_batches)]
    return torch.cat([b.tokens.flatten() for b in rows]).numpy(), rows


def test_pack_rows_are_the_document_stream_in_epoch_order(tiny_data):
    split = load_split(tiny_data, "train")
    loader = PackedLoader(split, batch_size=3, seq_len=64, seed=7)
    n_tokens = len(split.tokens)
    stream, rows = stream_of(loader, n_tokens // (3 * 64) + 2)
    assert all(b.tokens.shape == (3, 64) and not b.is_pad.any() for b in rows)
    order = np.random.default_rng([7, 0]).permutation(split.n_docs)
    epoch0 = np.concatenate([split.doc(i) for i in order])
    assert np.array_equal(stream[:n_tokens], epoch0)  # every token once, documents whole and in order
    order1 = np.random.default_rng([7, 1]).permutation(split.n_docs)
    epoch1 = np.concatenate([split.doc(i) for i in order1])
    assert np.array_equal(stream[n_tokens:], epoch1[:len(stream) - n_tokens])  # the next epoch carries on
    assert (stream[:n_tokens] == EOS_ID).sum() == split.n_docs


def test_prompt_mask_marks_each_documents_first_sentence(tiny_data):
    split = load_split(tiny_data, "train")
    loader = PackedLoader(split, batch_size=2, seq_len=50, use_prompts=True, shuffle=False, wrap=False)
    prompts = np.concatenate([b.is_prompt.flatten().numpy() for b in loader])
    expected = np.concatenate([np.arange(len(split.doc(i))) < split.prompt_lens[i] for i in range(split.n_docs)])
    assert np.array_equal(prompts[:len(expected)], expected)
    assert loader.counts["samples"] == split.n_docs


def test_eval_pass_ends_and_pads_the_last_window(tiny_data):
    split = load_split(tiny_data, "val")
    loader = PackedLoader(split, batch_size=4, seq_len=100, shuffle=False, wrap=False)
    batches = list(loader)
    tokens = torch.cat([b.tokens.flatten() for b in batches])
    pad = torch.cat([b.is_pad.flatten() for b in batches])
    assert torch.equal(tokens[~pad], torch.from_numpy(split.tokens.astype(np.int64)))
    assert pad.sum() == len(tokens) - len(split.tokens) and pad[-1] and (tokens[pad] == PAD_ID).all()


def test_pad_layout_one_document_per_row_and_overlong_counted(tiny_data):
    split = load_split(tiny_data, "train")
    lengths = np.diff(split.offsets)
    seq_len = int(np.median(lengths))
    for overlong, kept in (("drop", (lengths <= seq_len).sum()), ("truncate", split.n_docs)):
        loader = PackedLoader(split, batch_size=5, seq_len=seq_len, layout="pad", use_prompts=True,
                              fill_id=EOS_ID, overlong=overlong, shuffle=False, wrap=False)
        batches = list(loader)
        assert sum(len(b.tokens) for b in batches) == kept
        assert loader.counts["dropped" if overlong == "drop" else "truncated"] == (lengths > seq_len).sum()
        b = batches[0]
        first = split.doc(0)
        if len(first) <= seq_len and overlong == "drop":
            assert torch.equal(b.tokens[0, :len(first)], torch.from_numpy(first.astype(np.int64)))
            assert (b.tokens[0, len(first):] == EOS_ID).all() and b.is_pad[0, len(first):].all()
            assert not b.is_pad[0, :len(first)].any()
            assert b.is_prompt[0].sum() == split.prompt_lens[0]


def test_resume_from_state_dict_gives_the_same_batches(tiny_data):
    split = load_split(tiny_data, "train")
    a = PackedLoader(split, batch_size=2, seq_len=96, seed=3, use_prompts=True)
    for _ in range(len(split.tokens) // (2 * 96) + 3):  # crosses an epoch boundary
        a.next_batch()
    state = a.state_dict()
    b = PackedLoader(split, batch_size=2, seq_len=96, seed=3, use_prompts=True)
    b.load_state_dict(state)
    for _ in range(5):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.is_prompt, y.is_prompt)
    assert a.epoch >= 1


def _documents_in(row_tokens, row_pad):
    """The documents of a packed row: runs of tokens ending in EOS (the row's padding left out)."""
    ends = np.flatnonzero(row_tokens == EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert not row_pad[:ends[-1] + 1].any() and row_pad[ends[-1] + 1:].all()  # padding only after the last EOS
    return [tuple(row_tokens[a:b + 1]) for a, b in zip(starts, ends)]


def test_best_fit_keeps_every_sample_whole_with_its_prompt(tiny_data):
    """packing="best_fit": every row holds whole documents, each starting with its prompt and ending with its EOS,
    so no response is trained without its prompt; one pass lays out every document exactly once (those longer
    than a row are dropped, and counted); the rest of a row is padding."""
    split = load_split(tiny_data, "train")
    lengths = np.diff(split.offsets)
    seq_len = int(np.percentile(lengths, 90))
    loader = PackedLoader(split, batch_size=3, seq_len=seq_len, packing="best_fit", use_prompts=True, seed=2,
                          wrap=False)
    seen, padding = [], 0
    for b in loader:
        for tokens, is_prompt, is_pad in zip(b.tokens.numpy(), b.is_prompt.numpy(), b.is_pad.numpy()):
            docs = _documents_in(tokens, is_pad)
            seen += docs
            padding += is_pad.sum()
            starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
            for d, a in zip(docs, starts):
                i = [k for k in range(split.n_docs) if tuple(split.doc(k)) == d][0]
                assert is_prompt[a:a + len(d)].sum() == split.prompt_lens[i] and is_prompt[a:a + split.prompt_lens[i]].all()
    whole = sorted(tuple(split.doc(i)) for i in range(split.n_docs) if lengths[i] <= seq_len)
    assert sorted(seen) == whole
    assert loader.counts["dropped"] == (lengths > seq_len).sum() > 0
    assert padding < 0.5 * len(seen) * np.mean(lengths)  # best fit fills rows; the bound is loose on tiny data


def test_best_fit_resumes_exactly(tiny_data):
    split = load_split(tiny_data, "train")
    kw = dict(batch_size=2, seq_len=256, seed=3, use_prompts=True, packing="best_fit", overlong="truncate")
    a = PackedLoader(split, **kw)
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    assert state["buffer"]
    b = PackedLoader(split, **kw)
    b.load_state_dict(state)
    for _ in range(5):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.is_pad, y.is_pad)


def test_ranks_read_disjoint_shares(tiny_data):
    split = load_split(tiny_data, "train")
    shares = [PackedLoader(split, 1, 8, seed=1, rank=r, world_size=2)._order for r in range(2)]
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) + len(shares[1]) == split.n_docs


def test_bad_arguments(tiny_data):
    split = load_split(tiny_data, "val")
    with pytest.raises(ValueError, match="layout"):
        PackedLoader(split, 1, 8, layout="zigzag")
    with pytest.raises(ValueError, match="packing"):
        PackedLoader(split, 1, 8, packing="tetris")
    with pytest.raises(ValueError, match="cannot be shared"):
        PackedLoader(split, 1, 8, world_size=split.n_docs + 1)


def aligned(doc, align):
    return list(doc) + [EOS_ID] * (-len(doc) % align)


@pytest.mark.parametrize("packing", ["stream", "best_fit"])
def test_align_fills_each_document_with_eos_to_a_block_boundary(tiny_data, packing):
    """block_pad's layout: every document starts at a multiple of `align`, and what follows its EOS up to there
    is more EOS; nothing else changes (stream keeps the documents in order, best_fit keeps them whole)."""
    split = load_split(tiny_data, "train")
    align = 8
    seq_len = -(-int(np.diff(split.offsets).max()) // align) * align  # every document fits in a row
    loader = PackedLoader(split, batch_size=2, seq_len=seq_len, packing=packing, use_prompts=True, align=align,
                          shuffle=False, wrap=False)
    batches = list(loader)
    tokens = torch.cat([b.tokens for b in batches])
    is_pad = torch.cat([b.is_pad for b in batches])
    docs = [aligned(split.doc(i), align) for i in range(split.n_docs)]
    if packing == "stream":
        assert tokens[~is_pad].tolist() == [x for d in docs for x in d]
        return
    found = []
    for row, pad in zip(tokens.tolist(), is_pad):
        end = int((~pad).sum())
        assert end % align == 0 and pad[end:].all()  # padding fills whole blocks at the row's end
        while row[:end]:
            n = -(-(row.index(EOS_ID) + 1) // align) * align  # a document and its fill
            found.append(row[:n])
            row, end = row[n:], end - n
    assert sorted(found) == sorted(docs)
    with pytest.raises(ValueError, match="align"):
        PackedLoader(split, batch_size=2, seq_len=60, align=8)
