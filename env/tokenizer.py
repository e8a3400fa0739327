"""Tokenizers of the environment: raw bytes (256 symbols) and a locally trained BPE.

The BPE is byte-level (every byte sequence is representable), trained with the
`tokenizers` library on the training split only, with one special token `<|bos|>` that
starts every document. `token_bytes` gives, for every id, how many UTF-8 bytes it stands
for; the evaluator divides by these counts to turn nats per token into bits per byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

BOS = "<|bos|>"
# Split text into words, numbers and punctuation runs before merging, so merges never
# cross a word boundary (the usual GPT-style pre-tokenization, written as our own regex).
SPLIT_PATTERN = r"'(?:[sdmt]|ll|ve|re)|\s?\p{L}+|\s?\p{N}{1,3}|\s?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def byte_encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def _byte_alphabet() -> dict[str, int]:
    """Map the printable stand-in character of each byte (byte-level BPE) back to the byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> None:
    """Train a byte-level BPE with `vocab_size` ids (BOS included) and save it to `path`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(str(path))


class BPE:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self.bos_id = self._tok.token_to_id(BOS)
        self.vocab_size = self._tok.get_vocab_size()

    def encode_docs(self, texts: list[str]) -> Iterator[list[int]]:
        """Each document as BOS followed by its tokens."""
        for enc in self._tok.encode_batch(texts, add_special_tokens=False):
            yield [self.bos_id, *enc.ids]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def token_bytes(self, vocab_size: int) -> np.ndarray:
        """UTF-8 byte length of every id in [0, vocab_size); specials and unused ids count 0."""
        alphabet = _byte_alphabet()
        counts = np.zeros(vocab_size, dtype=np.int32)
        specials = {self.bos_id}
        for token, idx in self._tok.get_vocab().items():
            if idx < vocab_size and idx not in specials:
                counts[idx] = sum(1 for c in token if c in alphabet)
        return counts


def byte_token_bytes() -> np.ndarray:
    return np.ones(256, dtype=np.int32)
