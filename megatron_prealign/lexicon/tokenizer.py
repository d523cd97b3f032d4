"""Tokenizer wrappers with the one extra piece of knowledge the lexicon needs: word boundaries.

`build_tokenizer(tokenizer_type, tokenizer_model)` returns a `SentencePieceTokenizer` (a ``.model``
file) or a `HuggingFaceTokenizer` (a ``tokenizer.json`` or a local directory; never a hub
download). Both expose the same small surface: ``vocab_size``, ``eod``, ``pad``, ``unk``,
``fingerprint``, ``encode``, ``encode_batch``, ``decode``, ``encode_word``, ``encode_words`` and
``token_classes()``.

Word boundaries are derived from the vocabulary, not from the model family: the tokenizer encodes
the probe text ``"e e"`` and the piece that begins the second word reveals the word-start marker
(SentencePiece's ``▁``, byte-level BPE's ``Ġ`` i.e. a leading space byte, or nothing for WordPiece,
whose convention is instead a continuation prefix such as ``##`` read from the model). Every piece
is then put in one of three classes (`WORD_START`, `CONTINUATION`, `OTHER`), see `classify_pieces`.
"""
from __future__ import annotations

import abc
import functools
import hashlib
import itertools
import json
import os
import re
import struct
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np
import regex

from megatron_prealign.lexicon.dictionary import LexiconError
from megatron_prealign.log import get_logger

__all__ = [
    "CONTINUATION",
    "OTHER",
    "TOKENIZER_TYPES",
    "canonical_tokenizer_type",
    "WORD_START",
    "HuggingFaceTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_tokenizer",
    "classify_pieces",
    "ragged_ids",
]

logger = get_logger(__name__)

# Token classes (uint8). The values are shared with csrc/lexicon_scan.h; do not renumber.
OTHER = 0
"""Punctuation, digits, special, control and byte pieces: end a word, never start a lexicon match."""
WORD_START = 1
"""A piece that begins a new word (carries the tokenizer's word-start marker)."""
CONTINUATION = 2
"""A word-internal piece: a match may not end right before one."""

TOKENIZER_TYPES = ("SentencePieceTokenizer", "HuggingFaceTokenizer")
# Megatron-LM's names for the same wrappers (its GPTSentencePieceTokenizer and Llama2Tokenizer
# both encode with the SentencePiece model as is, adding no BOS).
TOKENIZER_TYPE_ALIASES = {"GPTSentencePieceTokenizer": "SentencePieceTokenizer",
                          "Llama2Tokenizer": "SentencePieceTokenizer"}


def canonical_tokenizer_type(name: str) -> str:
    """`name` as one of TOKENIZER_TYPES (Megatron-LM's spellings accepted); a clear error otherwise."""
    name = TOKENIZER_TYPE_ALIASES.get(name, name)
    if name not in TOKENIZER_TYPES:
        accepted = ", ".join((*TOKENIZER_TYPES, *TOKENIZER_TYPE_ALIASES))
        raise ValueError(f"--tokenizer-type {name!r} is not supported; use one of {accepted} (a SentencePiece "
                         f".model or a Hugging Face tokenizer.json / directory covers GPT-2 BPE, Llama, Qwen, ...)")
    return name

# Probe used to discover the word-start marker and the "after a space" encoding of a word:
# the anchor is a lowercase letter every tokenizer encodes as a standalone piece.
_ANCHOR = "e"
# Probe for the "inside running text" encoding of a word of a script written without spaces:
# an ideographic full stop, which SentencePiece and BPE vocabularies keep as a piece of its own.
_UNSPACED_ANCHOR = "\u3002"
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# EOS spellings tried, in order, when a HF tokenizer ships no tokenizer_config.json.
_EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "<|im_end|>", "[SEP]")


# Scripts written without spaces between words: a piece of these carries no word-boundary
# information, so an unmarked one may begin a word (and does not continue the word before it).
_UNSPACED_SCRIPT = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Bopomofo}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")


def is_unspaced_script(ch: str) -> bool:
    """True for a character of a script written without spaces between words (Chinese, Japanese
    kana, Thai, Lao, Khmer, Myanmar)."""
    return _UNSPACED_SCRIPT.match(ch) is not None


def _is_word_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    # Cs: a byte of an incomplete UTF-8 sequence (byte-level BPE pieces decoded with
    # surrogateescape); such fragments are almost always parts of non-ASCII letters.
    return cat[0] in "LM" or cat == "Cs"


def classify_pieces(
    texts: Sequence[str],
    word_marker: str,
    continuation_prefix: str = "",
    special: Sequence[bool] | None = None,
) -> np.ndarray:
    """Assign every vocabulary piece a token class.

    Args:
        texts: piece i's surface text (byte-level pieces already mapped back to characters).
        word_marker: prefix that marks a word-start piece (``"▁"``, ``" "``), or ``""``.
        continuation_prefix: prefix that marks a word-internal piece (WordPiece ``"##"``), or ``""``.
        special: True for pieces that are control/special/unknown/byte pieces (always OTHER).

    Returns:
        uint8 array of shape (len(texts),). A piece is WORD_START if it carries the marker and the
        rest is empty (a bare marker, followed by word-internal pieces for rare characters) or
        starts with a letter; CONTINUATION if it starts with a letter and has no marker; OTHER
        otherwise (punctuation, digits, whitespace runs, special pieces). With a continuation
        prefix instead of a marker, unmarked letter pieces start words and prefixed ones continue.
        With neither convention every letter piece is a WORD_START (no boundary information).
        So is every piece that starts with a character of a script written without spaces
        (`is_unspaced_script`: Han, kana, Thai, ...): inside ``我的目录`` the piece ``目录`` has no
        marker yet may begin a dictionary word, and a match before it may end there. Byte
        fragments of such characters (byte-level BPE) cannot be told apart and stay CONTINUATION.
    """
    out = np.full(len(texts), OTHER, dtype=np.uint8)
    for i, text in enumerate(texts):
        if not text or (special is not None and special[i]):
            continue
        if continuation_prefix and text.startswith(continuation_prefix):
            rest = text[len(continuation_prefix) :]
            if rest and _is_word_char(rest[0]):
                out[i] = WORD_START if is_unspaced_script(rest[0]) else CONTINUATION
        elif word_marker and text.startswith(word_marker):
            rest = text[len(word_marker) :]
            if not rest or _is_word_char(rest[0]):
                out[i] = WORD_START
        elif _is_word_char(text[0]):
            out[i] = CONTINUATION if word_marker and not is_unspaced_script(text[0]) else WORD_START
    return out


def _fingerprint(tokenizer_type: str, pieces: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(tokenizer_type.encode("utf-8") + b"\0")
    for piece in pieces:
        b = piece.encode("utf-8", errors="surrogatepass")
        # Length-prefixed so that no choice of piece text can collide with a different split.
        h.update(struct.pack("<I", len(b)))
        h.update(b)
    return h.hexdigest()


class Tokenizer(abc.ABC):
    """Common surface of the tokenizer wrappers (see module docstring)."""

    tokenizer_type: str
    model_path: str

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (ids are 0..vocab_size-1)."""

    @property
    @abc.abstractmethod
    def eod(self) -> int:
        """End-of-document (EOS) token id."""

    @property
    @abc.abstractmethod
    def pad(self) -> int:
        """Padding token id, or `eod` when the tokenizer has none."""

    @property
    @abc.abstractmethod
    def unk(self) -> int | None:
        """Id of the unknown token that stands for text the vocabulary cannot represent, or None
        when the model has none (byte-level BPE represents every text)."""

    @abc.abstractmethod
    def pieces(self) -> list[str]:
        """The vocabulary pieces, in id order (raw, as stored by the tokenizer)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS/EOS."""

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """`encode` of every text, in one call into the tokenizer library where it has one.

        ``num_threads`` caps the library's threads (SentencePiece); 1 keeps a worker process on
        one core, so that ``--workers`` alone decides how many cores preprocessing uses.
        """
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`."""

    @abc.abstractmethod
    def _piece_texts_and_special(self) -> tuple[list[str], list[bool]]:
        """Per piece: surface text for classification, and whether it is special."""

    @abc.abstractmethod
    def _continuation_prefix(self) -> str:
        """The model's word-internal prefix (WordPiece ``##``), or ``""``."""

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 hex of the tokenizer type and its ordered vocabulary pieces."""
        return _fingerprint(self.tokenizer_type, self.pieces())

    @functools.cached_property
    def _anchor_ids(self) -> list[int]:
        return self.encode(_ANCHOR)

    def encode_word(self, word: str) -> list[int]:
        """Token ids of `word` as it appears after a space in running text."""
        anchor = self._anchor_ids
        ids = self.encode(f"{_ANCHOR} {word}")
        if ids[: len(anchor)] == anchor:
            return ids[len(anchor) :]
        # The tokenizer merged across the space: fall back to the word on its own.
        return self._encode_word_alone(word)

    def _encode_word_alone(self, word: str) -> list[int]:
        return self.encode(self._word_alone_text(word))

    def _word_alone_text(self, word: str) -> str:
        return " " + word

    def encode_words(self, words: Sequence[str], num_threads: int = 1,
                     chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
        """`encode_word` of every word, batched: ``(offsets int64 (n+1,), flat int32)``, word i's
        ids being ``flat[offsets[i]:offsets[i+1]]``.

        Words are encoded ``chunk`` at a time with `encode_batch`, so the Python lists the
        tokenizer library returns never outgrow one chunk; the anchor is stripped with numpy.
        """
        anchor = np.asarray(self._anchor_ids, dtype=np.int32)
        lengths_parts: list[np.ndarray] = []
        flat_parts: list[np.ndarray] = []
        for begin in range(0, len(words), chunk):
            part = words[begin : begin + chunk]
            lengths, flat = ragged_ids(self.encode_batch([f"{_ANCHOR} {w}" for w in part], num_threads))
            starts = np.zeros(len(part), dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            anchored = lengths >= len(anchor)
            for k, a in enumerate(anchor.tolist()):
                at = np.minimum(starts + k, max(len(flat) - 1, 0))
                anchored &= (flat[at] == a) if len(flat) else False
            if anchored.all():
                keep = np.ones(len(flat), dtype=bool)
                keep[(starts[:, None] + np.arange(len(anchor))).reshape(-1)] = False
                flat, lengths = flat[keep], lengths - len(anchor)
            else:
                # The tokenizer merged across the space for some words: those are encoded on
                # their own (rare, so the rows are rebuilt only for such a chunk).
                rows = np.split(flat, starts[1:])
                merged = np.flatnonzero(~anchored).tolist()
                alone = self.encode_batch([self._word_alone_text(part[i]) for i in merged], num_threads)
                for i in np.flatnonzero(anchored).tolist():
                    rows[i] = rows[i][len(anchor):]
                for i, ids in zip(merged, alone):
                    rows[i] = np.asarray(ids, dtype=np.int32)
                lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
                flat = np.concatenate(rows).astype(np.int32, copy=False)
            lengths_parts.append(lengths)
            flat_parts.append(flat)
        offsets = np.zeros(len(words) + 1, dtype=np.int64)
        if lengths_parts:
            np.cumsum(np.concatenate(lengths_parts), out=offsets[1:])
        flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, np.int32)
        return offsets, flat

    def encode_words_in_text(self, words: Sequence[str], num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each word as it appears inside running text of a script written without
        spaces (right after another character, no word-start marker): ``(offsets, flat)`` as
        `encode_words`. A row is empty where the tokenizer merged the word with the probe before
        it, so no in-text form can be told apart."""
        anchor = self.encode(_UNSPACED_ANCHOR)
        rows = []
        for begin in range(0, len(words), 1 << 16):
            for ids in self.encode_batch([_UNSPACED_ANCHOR + w for w in words[begin:begin + (1 << 16)]], num_threads):
                rows.append(ids[len(anchor):] if ids[:len(anchor)] == anchor else ())
        lengths, flat = ragged_ids(rows)
        offsets = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, flat

    @functools.cached_property
    def word_marker(self) -> str:
        """The detected word-start marker in piece-text form (``"▁"``, ``" "``) or ``""``."""
        texts, _ = self._piece_texts_and_special()
        ids = self.encode_word(_ANCHOR)
        if not ids:
            return ""
        first = texts[ids[0]] if 0 <= ids[0] < len(texts) else ""
        pos = first.find(_ANCHOR)
        return first if pos < 0 else first[:pos]

    def token_classes(self) -> np.ndarray:
        """uint8 array of shape (vocab_size,) with WORD_START / CONTINUATION / OTHER per id."""
        return self._token_classes.copy()

    @functools.cached_property
    def _token_classes(self) -> np.ndarray:
        texts, special = self._piece_texts_and_special()
        marker, cont = self.word_marker, self._continuation_prefix()
        if not marker and not cont:
            logger.warning(
                "%s: no word-start marker or continuation prefix found; every letter piece is "
                "treated as a word start (consider --mode longest-match)",
                self.model_path,
            )
        return classify_pieces(texts, marker, cont, special)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_path!r}, vocab_size={self.vocab_size})"


def _read_tokenizer_json(reader, path: Path):
    try:
        return reader.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception
        raise LexiconError(f"{path} is not a Hugging Face tokenizer.json ({str(exc).splitlines()[0]}); a "
                           f"SentencePiece .model file needs --tokenizer-type SentencePieceTokenizer") from None


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model`` file."""

    tokenizer_type = "SentencePieceTokenizer"

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece as spm

        self.model_path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {self.model_path}")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        except (RuntimeError, OSError) as exc:
            raise LexiconError(f"{self.model_path} is not a SentencePiece model ({str(exc).splitlines()[0]}); a "
                               f"tokenizer.json or Hugging Face directory needs --tokenizer-type "
                               f"HuggingFaceTokenizer") from None
        if self._sp.eos_id() < 0:
            raise LexiconError(f"{self.model_path}: SentencePiece model has no EOS piece (eos_id=-1)")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eod(self) -> int:
        return self._sp.eos_id()

    @property
    def pad(self) -> int:
        pad = self._sp.pad_id()
        return pad if pad >= 0 else self.eod

    @property
    def unk(self) -> int | None:
        unk = self._sp.unk_id()
        return unk if 0 <= unk < self.vocab_size else None

    def pieces(self) -> list[str]:
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def _word_alone_text(self, word: str) -> str:
        # With add_dummy_prefix (the default) a lone word already gets its leading "▁".
        return word

    def _piece_texts_and_special(self) -> tuple[list[str], list[bool]]:
        sp = self._sp
        special = [
            sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i)
            for i in range(self.vocab_size)
        ]
        return self.pieces(), special

    def _continuation_prefix(self) -> str:
        return ""


class HuggingFaceTokenizer(Tokenizer):
    """A Hugging Face fast tokenizer from a local ``tokenizer.json`` or a local directory.

    A directory with ``tokenizer.json`` is read with `tokenizers` directly; any other directory is
    loaded with ``transformers.AutoTokenizer.from_pretrained(..., local_files_only=True)`` (which
    converts e.g. a SentencePiece-based checkpoint to a fast tokenizer). Nothing is downloaded.
    EOS/PAD come from ``tokenizer_config.json`` / ``special_tokens_map.json`` next to it when
    present, otherwise from the first known EOS spelling among the special tokens.
    """

    tokenizer_type = "HuggingFaceTokenizer"

    def __init__(self, model_path: str | os.PathLike):
        from tokenizers import Tokenizer as _HFTokenizer

        self.model_path = os.fspath(model_path)
        p = Path(self.model_path)
        named: dict[str, str | None] = {}
        if p.is_file():
            self._tok = _read_tokenizer_json(_HFTokenizer, p)
            config_dir = p.parent
        elif (p / "tokenizer.json").is_file():
            self._tok = _read_tokenizer_json(_HFTokenizer, p / "tokenizer.json")
            config_dir = p
        elif p.is_dir():
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
            if not getattr(hf, "is_fast", False):
                raise LexiconError(f"{p}: only fast (tokenizers-backed) Hugging Face tokenizers are supported")
            self._tok = hf.backend_tokenizer
            named = {"eos": hf.eos_token, "pad": hf.pad_token}
            config_dir = p
        else:
            raise FileNotFoundError(f"Hugging Face tokenizer not found: {self.model_path}")
        self._spec = json.loads(self._tok.to_str())
        for key in ("eos", "pad"):
            named.setdefault(key, None)
            if named[key] is None:
                named[key] = _configured_token(config_dir, f"{key}_token")
        self._eod = self._resolve_eos(named["eos"])
        pad_id = self._tok.token_to_id(named["pad"]) if named["pad"] else None
        self._pad = self._eod if pad_id is None else pad_id

    def _resolve_eos(self, configured: str | None) -> int:
        if configured is not None:
            eos = self._tok.token_to_id(configured)
            if eos is None:
                raise LexiconError(f"{self.model_path}: configured eos_token {configured!r} is not in the vocabulary")
            return eos
        specials = {t.content for t in self._tok.get_added_tokens_decoder().values() if t.special}
        for cand in _EOS_CANDIDATES:
            if cand in specials:
                return self._tok.token_to_id(cand)
        raise LexiconError(
            f"{self.model_path}: cannot determine the EOS token; put a tokenizer_config.json with "
            f'"eos_token" next to tokenizer.json'
        )

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def pad(self) -> int:
        return self._pad

    @functools.cached_property
    def unk(self) -> int | None:
        model = self._spec.get("model") or {}
        if isinstance(model.get("unk_id"), int):  # Unigram
            return model["unk_id"]
        token = model.get("unk_token")  # WordPiece, BPE, WordLevel
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    def pieces(self) -> list[str]:
        return [self._tok.id_to_token(i) or "" for i in range(self.vocab_size)]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        # tokenizers sizes its own thread pool (RAYON_NUM_THREADS); num_threads is not its knob.
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @functools.cached_property
    def _is_byte_level(self) -> bool:
        return _has_component(self._spec.get("pre_tokenizer"), "ByteLevel") or _has_component(
            self._spec.get("decoder"), "ByteLevel"
        )

    def _piece_texts_and_special(self) -> tuple[list[str], list[bool]]:
        pieces = self.pieces()
        special = [False] * len(pieces)
        for i, tok in self._tok.get_added_tokens_decoder().items():
            if tok.special and i < len(special):
                special[i] = True
        if bool((self._spec.get("model") or {}).get("byte_fallback")):
            for i, piece in enumerate(pieces):
                if _BYTE_PIECE.match(piece):
                    special[i] = True
        if self._is_byte_level:
            table = _byte_level_decoder()
            texts = []
            for i, piece in enumerate(pieces):
                if special[i] or any(ch not in table for ch in piece):
                    texts.append(piece)
                else:
                    texts.append(bytes(table[ch] for ch in piece).decode("utf-8", errors="surrogateescape"))
            return texts, special
        return pieces, special

    def _continuation_prefix(self) -> str:
        return (self._spec.get("model") or {}).get("continuing_subword_prefix") or ""


def ragged_ids(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of token ids as ``(lengths int64 (n,), flat int32)``."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))
    return lengths, flat


def _has_component(spec: dict | None, type_name: str) -> bool:
    if not spec:
        return False
    if spec.get("type") == type_name:
        return True
    return any(_has_component(sub, type_name) for key in ("pretokenizers", "decoders") for sub in spec.get(key) or [])


def _configured_token(config_dir: Path, key: str) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = config_dir / name
        if not f.is_file():
            continue
        value = json.loads(f.read_text(encoding="utf-8")).get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


@functools.lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte-to-unicode table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def build_tokenizer(tokenizer_type: str, tokenizer_model: str | os.PathLike) -> Tokenizer:
    """Build a tokenizer wrapper.

    Args:
        tokenizer_type: ``"SentencePieceTokenizer"`` or ``"HuggingFaceTokenizer"``.
        tokenizer_model: a SentencePiece ``.model`` file, or a ``tokenizer.json`` / local
            directory for Hugging Face.

    Raises:
        ValueError: unknown `tokenizer_type`.
        FileNotFoundError: `tokenizer_model` does not exist.
    """
    tokenizer_type = canonical_tokenizer_type(tokenizer_type)
    if tokenizer_type == "SentencePieceTokenizer":
        return SentencePieceTokenizer(tokenizer_model)
    if tokenizer_type == "HuggingFaceTokenizer":
        return HuggingFaceTokenizer(tokenizer_model)
    raise ValueError(f"unknown tokenizer_type {tokenizer_type!r}; expected one of {TOKENIZER_TYPES}")
