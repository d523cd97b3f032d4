"""The English-Clone language (docs/DESIGN.md §5) as an ordinary SentencePiece model.

Every English token id ``i`` (vocabulary ``V``) gets a twin ``i + V``: the clone has English's
grammar and statistics but shares no token with it. So that the whole library (preprocessing,
``tools/build_lexicon.py``, the trainer's ``--tokenizer-type SentencePieceTokenizer``) works on the
doubled vocabulary without any special case, the clone is given a *written form* and the twins
are real pieces of one SentencePiece model of size ``2V``:

* **Clone script.** Printable ASCII maps to its full-width form (``house`` -> ``ｈｏｕｓｅ``,
  ``,`` -> ``，``, ``7`` -> ``７``), and every word starts with the mark ``ᶜ`` (U+1D9C, a modifier
  letter): ``The house.`` -> ``ᶜＴｈｅ ᶜｈｏｕｓｅ．``. Spaces stay spaces.
* **Twin pieces.** English piece ``p`` becomes ``clone_piece(p)``: its characters in full width,
  and the word-start marker ``▁`` followed by ``ᶜ`` (``▁house`` -> ``▁ᶜｈｏｕｓｅ``; the bare
  ``▁`` piece -> ``▁ᶜ``). SentencePiece turns each space of clone text into ``▁``, so the clone
  string ``▁ᶜｈｏｕｓｅ▁ᶜｉｓ`` is the character-for-character image of ``▁house▁is``; with identical
  scores the unigram lattice is isomorphic and the segmentation is the English one, shifted by
  ``V``. `verify_clone_model` checks exactly that on real text. Twins of control / unknown pieces
  are ``UNUSED`` pieces (never produced); text that SentencePiece cannot cover maps to the one
  shared ``<unk>`` in both languages, and the end-of-document id is shared.

Word boundaries follow from the pieces, as for any tokenizer: ``▁ᶜ…`` pieces carry the marker
followed by a letter (``WORD_START``), full-width letter pieces are ``CONTINUATION``, full-width
punctuation and digits are ``OTHER``. The only class difference between a piece and its twin: an
English ``▁`` + punctuation/digit piece (``▁(``, ``OTHER``) has a ``WORD_START`` twin (``▁ᶜ（``),
because the mark is a letter; no lexicon entry begins with such a piece, so scans of English and
clone text find the same words (tested).

The base model must use SentencePiece's ``identity`` normalization (NFKC would fold full-width
text back to ASCII); `train_english_tokenizer` trains it that way.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import struct
from typing import Iterable

__all__ = [
    "CLONE_MARK",
    "SP_SPACE",
    "build_clone_model",
    "clone_piece",
    "from_clone_text",
    "is_clone_text",
    "to_clone_text",
    "train_english_tokenizer",
    "verify_clone_model",
]

CLONE_MARK = "\u1d9c"
"""``ᶜ``: starts every clone word; a letter (Unicode Lm) so clone words classify as words."""
SP_SPACE = "\u2581"
"""SentencePiece's word-start marker ``▁``."""

_FULLWIDTH_OFFSET = 0xFEE0  # '!' (0x21) + offset = '！' (0xFF01); '~' (0x7E) -> '～' (0xFF5E)
_WHITESPACE = re.compile(r"\s+")
_CLONE_CHARS = frozenset(chr(c + _FULLWIDTH_OFFSET) for c in range(0x21, 0x7F)) | {CLONE_MARK}

# SentencePiece piece types (sentencepiece_model.proto, ModelProto.SentencePiece.Type).
_NORMAL, _UNUSED = 1, 5


def _to_fullwidth(ch: str) -> str:
    code = ord(ch)
    if not 0x21 <= code <= 0x7E:
        raise ValueError(f"the clone script covers printable ASCII only; got {ch!r} (U+{code:04X})")
    return chr(code + _FULLWIDTH_OFFSET)


def to_clone_text(text: str) -> str:
    """The clone-script form of printable-ASCII `text` (whitespace runs become one space).

    Raises:
        ValueError: `text` has a character outside printable ASCII and whitespace.
    """
    words = _WHITESPACE.split(text.strip())
    return " ".join(CLONE_MARK + "".join(_to_fullwidth(ch) for ch in word) for word in words if word)


def from_clone_text(text: str) -> str:
    """Inverse of `to_clone_text` (ASCII characters and spaces pass through unchanged)."""
    out = []
    for ch in text:
        if ch == CLONE_MARK:
            continue
        code = ord(ch)
        out.append(chr(code - _FULLWIDTH_OFFSET) if 0xFF01 <= code <= 0xFF5E else ch)
    return "".join(out)


def is_clone_text(text: str) -> bool:
    """True if every non-space character of `text` belongs to the clone script."""
    return any(not ch.isspace() for ch in text) and all(ch.isspace() or ch in _CLONE_CHARS for ch in text)


def clone_piece(piece: str) -> str:
    """The twin of an English SentencePiece piece (see module docstring).

    Raises:
        ValueError: the piece has a character outside printable ASCII, or a ``▁`` that is not
            its first character (the base model must split by whitespace).
    """
    rest, prefix = piece, ""
    if piece.startswith(SP_SPACE):
        rest, prefix = piece[1:], SP_SPACE + CLONE_MARK
    if SP_SPACE in rest:
        raise ValueError(f"piece {piece!r} has an inner {SP_SPACE!r}; train with split_by_whitespace")
    return prefix + "".join(_to_fullwidth(ch) for ch in rest)


# ------------------------------------------------------------------------------------------
# Protobuf: the twins are appended to the serialized ModelProto. A repeated field may occur
# anywhere in a message, occurrences are concatenated in order, and a repeated message field
# (trainer_spec) is merged field by field, later scalars winning; so appending bytes is a
# well-defined edit that needs no protobuf runtime.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _piece_message(piece: str, score: float, piece_type: int) -> bytes:
    payload = _length_delimited(1, piece.encode("utf-8"))
    payload += _varint(2 << 3 | 5) + struct.pack("<f", score)
    payload += _varint(3 << 3 | 0) + _varint(piece_type)
    return _length_delimited(1, payload)  # ModelProto.pieces = 1


def build_clone_model(base_model: bytes) -> bytes:
    """Serialized SentencePiece model with the English pieces (ids ``0..V-1``) followed by their
    twins (ids ``V..2V-1``).

    Args:
        base_model: the serialized English unigram model (``identity`` normalization, split by
            whitespace, pieces in printable ASCII), e.g. from `train_english_tokenizer`.

    Raises:
        ValueError: a base piece cannot be cloned, or the base already contains clone pieces.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=base_model)
    vocab = sp.get_piece_size()
    twins = []
    for i in range(vocab):
        piece = sp.id_to_piece(i)
        if any(ch in _CLONE_CHARS for ch in piece):
            raise ValueError(f"base model piece {i} {piece!r} is already in the clone script")
        special = sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i)
        if special:
            # Never produced by encoding; keeps ids aligned (twin of i is i + V).
            twins.append(_piece_message(piece + CLONE_MARK, 0.0, _UNUSED))
        else:
            twins.append(_piece_message(clone_piece(piece), sp.get_score(i), _NORMAL))
    trainer_spec = _length_delimited(2, _varint(3 << 3 | 0) + _varint(2 * vocab))  # vocab_size = 3
    model = base_model + b"".join(twins) + trainer_spec
    doubled = spm.SentencePieceProcessor(model_proto=model)
    if doubled.get_piece_size() != 2 * vocab:
        raise ValueError(f"clone model has {doubled.get_piece_size()} pieces, expected {2 * vocab}")
    return model


def verify_clone_model(clone_model: bytes, texts: Iterable[str], vocab_size: int) -> int:
    """Check that the doubled model encodes English as the base model does and clone text as the
    shifted English encoding. Returns the number of tokens checked.

    Args:
        clone_model: output of `build_clone_model`.
        texts: printable-ASCII English texts.
        vocab_size: ``V``, the English vocabulary size.

    Raises:
        ValueError: naming the first text whose clone encoding is not the shifted English one
            (e.g. a base model with NFKC normalization, which folds the clone script to ASCII).
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=clone_model)
    checked = 0
    for text in texts:
        english = sp.encode(text)
        if any(t >= vocab_size for t in english):
            raise ValueError(f"English text encodes to clone ids: {text[:80]!r}")
        clone = sp.encode(to_clone_text(text))
        if clone != [t + vocab_size for t in english]:
            raise ValueError(
                "clone text does not encode to the shifted English ids (is the base model's "
                f"normalization 'identity'?): {text[:80]!r}"
            )
        checked += len(english)
    return checked


@contextlib.contextmanager
def _training_errors(vocab_size: int):
    try:
        yield
    except RuntimeError as exc:
        # SentencePiece reports e.g. a vocabulary larger than the corpus supports as INTERNAL.
        raise ValueError(f"SentencePiece training with vocab_size={vocab_size} failed: {exc}") from None


def train_english_tokenizer(sentences: Iterable[str], vocab_size: int, *, num_threads: int = 2) -> bytes:
    """Train the English SentencePiece unigram model the clone is built from.

    Identity normalization (the corpus is already normalized to printable ASCII, and NFKC would
    fold the clone script), digits split, no byte fallback, ids ``<unk>=0 <s>=1 </s>=2 <pad>=3``.
    Returns the serialized model.
    """
    import sentencepiece as spm

    out = io.BytesIO()
    with open(os.devnull, "w") as devnull, _training_errors(vocab_size):
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=out,
            logstream=devnull,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            normalization_rule_name="identity",
            split_digits=True,
            byte_fallback=False,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=3,
            num_threads=num_threads,
            minloglevel=2,
        )
    return out.getvalue()


def split_sentences(text: str, max_chars: int = 2000) -> list[str]:
    """Sentence-sized pieces of `text` (SentencePiece training skips lines over ~4 KB)."""
    parts = re.split(r"(?<=[.!?])\s+", text)
    out: list[str] = []
    for part in parts:
        while len(part) > max_chars:
            cut = part.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(part[:cut])
            part = part[cut:].lstrip()
        if part:
            out.append(part)
    return out

