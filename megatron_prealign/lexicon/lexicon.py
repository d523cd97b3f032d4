"""The compiled lexicon: tokenized dictionary entries, a token-id trie, a translation table, and
the `.lex` file that carries them from `tools/build_lexicon.py` to the data pipeline.

Vocabulary: a *lexicon entry* is one surface form tokenized as in running text (distinct token
sequences are distinct entries); its *translations* are other entry ids; its *group* is the
connected component of the translation graph it belongs to (what the alignment pre-pass treats
as "the same meaning"). See README.md in this folder for the stages and the file layout.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import importlib
import json
import os
import struct
from typing import Any, Iterable, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path
from megatron_prealign.lexicon.dictionary import DictionaryReadResult, LexiconError
from megatron_prealign.lexicon.tokenizer import CONTINUATION, WORD_START, Tokenizer, is_unspaced_script
from megatron_prealign.log import get_logger

__all__ = ["LEX_MAGIC", "LEX_VERSION", "MODES", "Lexicon", "compile_lexicon", "load_lexicon"]

logger = get_logger(__name__)

MODES = ("word", "longest-match")
_MODE_CODE = {"word": 0, "longest-match": 1}  # ScanMode in csrc/lexicon_scan.h

LEX_MAGIC = b"PREALEX\0"
LEX_VERSION = 1
_PREAMBLE = struct.Struct("<8sII")  # magic, version, header length
_ALIGN = 64

# Every array of a lexicon, in file and hash order, with its dtype (little-endian on disk).
_ARRAY_DTYPES: dict[str, np.dtype] = {
    "token_classes": np.dtype("<u1"),
    "entry_offsets": np.dtype("<i8"),
    "entry_flat": np.dtype("<i4"),
    "entry_text_offsets": np.dtype("<i8"),
    "entry_text_utf8": np.dtype("<u1"),
    "translation_offsets": np.dtype("<i8"),
    "translation_flat": np.dtype("<i4"),
    "group_ids": np.dtype("<i4"),
    "trie_child_offsets": np.dtype("<i8"),
    "trie_child_tokens": np.dtype("<i4"),
    "trie_child_nodes": np.dtype("<i4"),
    "trie_node_entry": np.dtype("<i4"),
}


def _native():
    """The compiled extension, imported on first use so that parsing works without a build."""
    try:
        return importlib.import_module("megatron_prealign._C")
    except ImportError as exc:
        raise ImportError(
            "megatron_prealign._C (the compiled lexicon scanner) is not built or does not load "
            f"({exc}); run `pip install -e .` in the repository root to build it"
        ) from exc


class Lexicon:
    """A compiled lexicon (see module docstring). Build with `compile_lexicon`, `load_lexicon`
    or `Lexicon.from_entries`; arrays are read-only."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        *,
        mode: str,
        tokenizer_fingerprint: str,
        tokenizer_type: str,
        stats: dict[str, Any] | None = None,
        sha256: str | None = None,
        path: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        missing = set(_ARRAY_DTYPES) - set(arrays)
        if missing:
            raise ValueError(f"missing lexicon arrays: {sorted(missing)}")
        self._arrays = {name: _readonly(np.asarray(arrays[name], dtype=dt)) for name, dt in _ARRAY_DTYPES.items()}
        self.mode = mode
        self.tokenizer_fingerprint = tokenizer_fingerprint
        self.tokenizer_type = tokenizer_type
        self.path = path
        self._stats = dict(stats or {})
        self._check_structure()
        self.sha256 = self._content_sha256()
        if sha256 is not None and sha256 != self.sha256:
            raise LexiconError(
                f"{path or '<lexicon>'}: content sha256 mismatch (recorded {sha256}, content hashes "
                f"to {self.sha256}); the file is corrupt, rebuild it with tools/build_lexicon.py"
            )
        self._trie = None

    # ----------------------------------------------------------------- construction helpers

    @classmethod
    def from_entries(
        cls,
        entry_tokens: Sequence[Sequence[int]],
        translations: Sequence[Iterable[int]],
        token_classes: np.ndarray,
        *,
        mode: str = "word",
        entry_texts: Sequence[str] | None = None,
        group_ids: Sequence[int] | None = None,
        tokenizer_fingerprint: str = "",
        tokenizer_type: str = "",
        stats: dict[str, Any] | None = None,
    ) -> "Lexicon":
        """Assemble a lexicon from tokenized entries.

        Args:
            entry_tokens: token ids per entry; non-empty, non-negative, distinct sequences.
            translations: entry ids of each entry's translations (self and repeats are removed).
            token_classes: uint8 (vocab_size,) class table.
            mode: ``"word"`` or ``"longest-match"``.
            entry_texts: surface text per entry (default: empty strings).
            group_ids: group per entry (default: connected components of the translations).
            tokenizer_fingerprint, tokenizer_type, stats: recorded as given.

        Only entries with at least one translation are put in the trie, so `scan` never reports
        a word that has nothing to be switched to.
        """
        num = len(entry_tokens)
        if len(translations) != num:
            raise ValueError(f"{len(translations)} translation lists for {num} entries")
        if entry_texts is not None and len(entry_texts) != num:
            raise ValueError(f"{len(entry_texts)} entry texts for {num} entries")
        toks = [tuple(int(t) for t in seq) for seq in entry_tokens]
        seen: dict[tuple[int, ...], int] = {}
        for i, seq in enumerate(toks):
            if not seq or min(seq) < 0 or max(seq) > np.iinfo(np.int32).max:
                raise ValueError(f"entry {i} has empty or out-of-range token ids: {seq}")
            if seq in seen:
                raise ValueError(f"entries {seen[seq]} and {i} have the same tokens {seq}")
            seen[seq] = i
        trans = []
        for i, tr in enumerate(translations):
            ids = sorted({int(t) for t in tr} - {i})
            if ids and (ids[0] < 0 or ids[-1] >= num):
                raise ValueError(f"entry {i} has a translation id outside [0, {num})")
            trans.append(ids)
        arrays = {"token_classes": np.asarray(token_classes, dtype=np.uint8)}
        arrays["entry_offsets"], arrays["entry_flat"] = _ragged(toks, np.int32)
        arrays["translation_offsets"], arrays["translation_flat"] = _ragged(trans, np.int32)
        if group_ids is None:
            groups = _native().connected_components(arrays["translation_offsets"], arrays["translation_flat"])
        else:
            groups = np.asarray(group_ids, dtype=np.int32)
        if len(groups) != num or (num and groups.min() < 0):
            raise ValueError(f"expected {num} non-negative group ids, got {groups.tolist()[:10]}…")
        texts = [""] * num if entry_texts is None else list(entry_texts)
        arrays["entry_text_offsets"], arrays["entry_text_utf8"] = _utf8_table(texts)
        arrays["group_ids"] = groups
        trie = _build_trie(arrays["entry_offsets"], arrays["entry_flat"], np.diff(arrays["translation_offsets"]) > 0)
        arrays.update(zip(("trie_child_offsets", "trie_child_tokens", "trie_child_nodes", "trie_node_entry"), trie))
        return cls(
            arrays,
            mode=mode,
            tokenizer_fingerprint=tokenizer_fingerprint,
            tokenizer_type=tokenizer_type,
            stats=stats,
        )

    # ------------------------------------------------------------------------- public API

    @property
    def num_entries(self) -> int:
        """Number of lexicon entries (entry ids are 0..num_entries-1)."""
        return len(self._arrays["entry_offsets"]) - 1

    @property
    def vocab_size(self) -> int:
        """Size of the token-class table, i.e. of the tokenizer's vocabulary."""
        return len(self._arrays["token_classes"])

    @property
    def token_classes(self) -> np.ndarray:
        """uint8 (vocab_size,): WORD_START / CONTINUATION / OTHER per token id."""
        return self._arrays["token_classes"]

    @property
    def entry_offsets(self) -> np.ndarray:
        """int64 (num_entries+1,): entry i's tokens are entry_flat[entry_offsets[i]:entry_offsets[i+1]]."""
        return self._arrays["entry_offsets"]

    @property
    def entry_flat(self) -> np.ndarray:
        """int32: all entries' token ids, concatenated."""
        return self._arrays["entry_flat"]

    @property
    def translation_offsets(self) -> np.ndarray:
        """int64 (num_entries+1,): entry i's translations are translation_flat[off[i]:off[i+1]]."""
        return self._arrays["translation_offsets"]

    @property
    def translation_flat(self) -> np.ndarray:
        """int32: all entries' translation entry ids (sorted per entry), concatenated."""
        return self._arrays["translation_flat"]

    @property
    def group_ids(self) -> np.ndarray:
        """int32 (num_entries,): translation group (connected component) of each entry."""
        return self._arrays["group_ids"]

    def entry_tokens(self, i: int) -> np.ndarray:
        """int32 token ids of entry `i`, as the word appears after a space in running text."""
        off = self.entry_offsets
        i = self._check_index(i)
        return self.entry_flat[off[i] : off[i + 1]]

    def entry_text(self, i: int) -> str:
        """Surface text of entry `i` (the first dictionary word that tokenized to it)."""
        off = self._arrays["entry_text_offsets"]
        i = self._check_index(i)
        return self._arrays["entry_text_utf8"][off[i] : off[i + 1]].tobytes().decode("utf-8")

    def translations(self, i: int) -> np.ndarray:
        """int32 entry ids of the translations of entry `i` (sorted, never `i` itself)."""
        off = self.translation_offsets
        i = self._check_index(i)
        return self.translation_flat[off[i] : off[i + 1]]

    def group_id(self, i: int) -> int:
        """Translation group of entry `i`; an entry and all its translations share it."""
        return int(self.group_ids[self._check_index(i)])

    def scan(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Find lexicon entries in a token stream (compiled; releases the GIL).

        Args:
            tokens: 1-D numpy array of token ids, dtype int32 or uint16. Any ids are allowed;
                ids outside the vocabulary never match and end a word.

        Returns:
            (starts int64, lengths int32, entry_ids int32), one row per match, in stream order.
            In ``word`` mode a match starts at a WORD_START token and ends where the next token
            is not a CONTINUATION (or at the end); the longest such entry wins. In
            ``longest-match`` mode any position may start or end. Matches never overlap: after
            a match the scan resumes after it, otherwise at the next token.
        """
        if not isinstance(tokens, np.ndarray):
            raise TypeError(f"tokens must be a numpy array, got {type(tokens).__name__}")
        # dtype, shape and contiguity are checked (and strided input copied) in the extension,
        # keeping the per-call cost low for per-document scans.
        trie = self._trie if self._trie is not None else self._compiled_trie()
        return trie.scan(tokens, _MODE_CODE[self.mode])

    def scan_documents(self, tokens: np.ndarray, doc_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """`scan` each document of a concatenated batch, in one compiled call (releases the GIL).

        Args:
            tokens: 1-D int32 or uint16, the documents back to back.
            doc_lengths: int (D,) tokens per document; they tile ``tokens`` (a trailing rest is
                not scanned). No match crosses a document end.

        Returns:
            ``(triples, values_per_document, covered)``: int32 (3S,) ``(start within the
            document, length, entry id)`` rows, the code-switch sidecar's layout; int64 (D,)
            3 x each document's match count; the summed match length.

        Raises:
            ValueError: the lengths are negative or overrun ``tokens``.
        """
        if not isinstance(tokens, np.ndarray):
            raise TypeError(f"tokens must be a numpy array, got {type(tokens).__name__}")
        trie = self._trie if self._trie is not None else self._compiled_trie()
        return trie.scan_documents(tokens, np.ascontiguousarray(doc_lengths, dtype=np.int64), _MODE_CODE[self.mode])

    def _compiled_trie(self):
        arrays = [
            _native_order(self._arrays[name])
            for name in ("trie_child_offsets", "trie_child_tokens", "trie_child_nodes", "trie_node_entry", "token_classes")
        ]
        try:
            self._trie = _native().LexiconTrie(*arrays)
        except ValueError as exc:
            # Only a damaged or hand-made file gets here (compile_lexicon builds valid tries).
            raise LexiconError(f"{self.path or '<lexicon>'}: corrupt lexicon: {exc}") from None
        return self._trie

    def summary(self) -> dict[str, Any]:
        """Counts for humans and logs: entries, unique sources, multi-token share, drops."""
        lengths = np.diff(self.entry_offsets)
        has_translation = np.diff(self.translation_offsets) > 0
        # Entries are never empty, so entry_offsets[:-1] indexes each entry's first token.
        first = self.entry_flat[self.entry_offsets[:-1]] if self.num_entries else np.zeros(0, np.int32)
        classes = self.token_classes
        starts_word = np.zeros(self.num_entries, dtype=bool)
        in_vocab = first < len(classes)
        starts_word[in_vocab] = classes[first[in_vocab]] == WORD_START
        scannable = has_translation if self.mode == "longest-match" else has_translation & starts_word
        group_sizes = np.bincount(self.group_ids) if self.num_entries else np.zeros(0, np.int64)
        return {
            "entries": self.num_entries,
            "unique_sources": int(self._stats.get("unique_sources", self.num_entries)),
            "in_text_forms": int(self._stats.get("in_text_forms", 0)),
            "multi_token_share": float((lengths > 1).mean()) if self.num_entries else 0.0,
            "scannable_entries": int(scannable.sum()),
            "groups": int((group_sizes > 0).sum()),
            "largest_group": int(group_sizes.max()) if len(group_sizes) else 0,
            "dropped": dict(self._stats.get("dropped", {})),
            "mode": self.mode,
            "vocab_size": self.vocab_size,
            "tokenizer_type": self.tokenizer_type,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "sha256": self.sha256,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the `.lex` file atomically (temp name, renamed when complete)."""
        layout, offset = [], 0
        for name, dt in _ARRAY_DTYPES.items():
            arr = self._arrays[name]
            layout.append({"name": name, "dtype": dt.str, "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes})
            offset = _aligned(offset + arr.nbytes)
        header = {
            "format": "megatron_prealign.lexicon",
            "version": LEX_VERSION,
            "mode": self.mode,
            "tokenizer_type": self.tokenizer_type,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "sha256": self.sha256,
            "stats": self._stats,
            "arrays": layout,
            "data_nbytes": offset,
        }
        header_bytes = json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8")
        data_start = _aligned(_PREAMBLE.size + len(header_bytes))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(_PREAMBLE.pack(LEX_MAGIC, LEX_VERSION, len(header_bytes)))
                f.write(header_bytes)
                f.write(b"\0" * (data_start - f.tell()))
                for entry in layout:
                    f.write(self._arrays[entry["name"]].view(np.uint8))
                    f.write(b"\0" * (_aligned(entry["nbytes"]) - entry["nbytes"]))
                f.flush()
                os.fsync(f.fileno())
        self.path = os.fspath(path)

    # --------------------------------------------------------------------------- internals

    def _check_index(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.num_entries:
            raise IndexError(f"entry id {i} out of range [0, {self.num_entries})")
        return i

    def _check_structure(self) -> None:
        a, where = self._arrays, self.path or "<lexicon>"
        num = len(a["entry_offsets"]) - 1
        problems = []
        if num < 0:
            problems.append("entry_offsets is empty")
        for name, flat in (("entry", "entry_flat"), ("entry_text", "entry_text_utf8"), ("translation", "translation_flat")):
            off = a[f"{name}_offsets"]
            if len(off) != num + 1:
                problems.append(f"{name}_offsets has {len(off)} elements, expected {num + 1}")
            elif len(off) and (off[0] != 0 or off[-1] != len(a[flat]) or np.any(np.diff(off) < 0)):
                problems.append(f"{name}_offsets does not index {flat}")
        if len(a["group_ids"]) != max(num, 0):
            problems.append(f"group_ids has {len(a['group_ids'])} elements, expected {num}")
        tf = a["translation_flat"]
        if len(tf) and (tf.min() < 0 or tf.max() >= num):
            problems.append("translation_flat has entry ids out of range")
        ne = a["trie_node_entry"]
        if len(ne) and ne.max() >= num:
            problems.append("trie_node_entry has entry ids out of range")
        tc = a["token_classes"]
        if len(tc) and tc.max() > CONTINUATION:
            problems.append(f"token_classes has class {int(tc.max())} (expected 0, 1 or 2)")
        if problems:
            raise LexiconError(f"{where}: corrupt lexicon: " + "; ".join(problems))

    def _content_sha256(self) -> str:
        h = hashlib.sha256()
        h.update(f"megatron_prealign.lexicon/v{LEX_VERSION}\0{self.mode}\0{self.tokenizer_fingerprint}\0".encode())
        for name, dt in _ARRAY_DTYPES.items():
            arr = self._arrays[name]
            h.update(f"{name}\0{dt.str}\0{arr.shape}\0".encode())
            h.update(arr.view(np.uint8))  # the buffer itself: no copy of a large array
        return h.hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        # The compiled trie is not picklable; data-loader workers rebuild it on first scan.
        state = self.__dict__.copy()
        state["_trie"] = None
        return state

    def __repr__(self) -> str:
        return f"Lexicon(entries={self.num_entries}, mode={self.mode!r}, sha256={self.sha256[:12]}…)"


def compile_lexicon(
    dictionary_result: DictionaryReadResult,
    tokenizer: Tokenizer,
    case_variants: bool = False,
    mode: str = "word",
) -> Lexicon:
    """Tokenize a dictionary's words and compile them into a `Lexicon`.

    Args:
        dictionary_result: groups from `read_dictionary`.
        tokenizer: tokenizer whose `encode_word` and `token_classes` define the entries.
        case_variants: also add the Capitalized form of every group (first letter upper-cased);
            a capitalized word's translations are the capitalized translations. Members that do
            not change (caseless scripts, already-capitalized names) get no new outgoing edges,
            so e.g. ``银行`` does not gain ``Bank`` next to ``bank``.
        mode: ``"word"`` (scripts with spaces) or ``"longest-match"`` (scripts without).

    Returns:
        The lexicon. Words that tokenize to nothing or to any unknown-token id are dropped
        (``untokenizable``); two words with identical tokens become one entry, and a translation
        that collapses onto its own entry that way is dropped (``identical_tokens``).

    Raises:
        LexiconError: no entry is left with a translation (naming the dictionary file).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    native = _native()
    words, edge_src, edge_dst, source_words = _word_graph(dictionary_result.groups, case_variants)
    word_offsets, word_flat = tokenizer.encode_words(words, num_threads=os.cpu_count() or 1)
    # Any unknown id, not only an all-unknown encoding: the entry would stand for every word
    # with some unrepresentable character at that place ("жаба" and "шаба" alike when "ж" and
    # "ш" are unknown), so the scan would switch words that are not this one, and switching
    # *to* it would write unknown tokens into the model's input.
    word_lengths = np.diff(word_offsets)
    tokenizable = word_lengths > 0
    if tokenizer.unk is not None:
        tokenizable[np.repeat(np.arange(len(words)), word_lengths)[word_flat == tokenizer.unk]] = False
    untokenizable_words = np.flatnonzero(~tokenizable)
    words, word_offsets, word_flat, tokenizable, edge_src, edge_dst, in_text_forms = _add_in_text_forms(
        tokenizer, words, word_offsets, word_flat, tokenizable, edge_src, edge_dst)
    kept = np.flatnonzero(tokenizable)
    # Entries are the distinct token sequences, numbered in the order their first word appears
    # in the dictionary; that word is the entry's text.
    entry_of_kept, first_kept = native.dedupe_rows(*_take_rows(word_offsets, word_flat, kept))
    entry_words = kept[first_kept]
    entry_offsets, entry_flat = _take_rows(word_offsets, word_flat, entry_words)
    del word_flat
    entry_of_word = np.full(len(words), -1, dtype=np.int32)
    entry_of_word[kept] = entry_of_kept
    num = len(entry_words)

    src, dst = entry_of_word[edge_src], entry_of_word[edge_dst]
    del edge_src, edge_dst
    both = (src >= 0) & (dst >= 0)
    identical_tokens = int(np.count_nonzero(both & (src == dst)))
    both &= src != dst
    pairs = _sorted_unique(src[both].astype(np.int64) * max(num, 1) + dst[both])  # by (src, dst)
    del src, dst, both
    translation_offsets = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // max(num, 1), minlength=num), out=translation_offsets[1:])
    translation_flat = (pairs % max(num, 1)).astype(np.int32)
    del pairs

    untokenizable = len(untokenizable_words)
    if untokenizable:
        examples = ", ".join(repr(words[i]) for i in _first_sorted(words, untokenizable_words, 5))
        logger.warning("%s: %d words the tokenizer cannot represent (empty or unknown-token ids) are dropped, "
                       "e.g. %s", dictionary_result.path, untokenizable, examples)
    if not len(translation_flat):
        raise LexiconError(
            f"{dictionary_result.path}: no entry with a translation is left for the {tokenizer.tokenizer_type} "
            f"tokenizer ({len(dictionary_result.groups)} groups: {untokenizable} words untokenizable, "
            f"{identical_tokens} translations with the same tokens as their word)"
        )
    sources = entry_of_word[source_words]
    dropped = dict(dictionary_result.dropped)
    dropped["untokenizable"] = untokenizable
    dropped["identical_tokens"] = identical_tokens
    stats = {
        "dictionary": os.path.basename(dictionary_result.path),
        "dictionary_format": dictionary_result.format,
        "dictionary_groups": len(dictionary_result.groups),
        "case_variants": case_variants,
        "unique_sources": len(_sorted_unique(sources[sources >= 0])),
        "in_text_forms": in_text_forms,
        "dropped": dropped,
    }
    texts = [words[i] for i in entry_words.tolist()]
    del words, entry_of_word
    text_offsets, text_utf8 = _utf8_table(texts)
    del texts
    arrays = {
        "token_classes": tokenizer.token_classes(),
        "entry_offsets": entry_offsets,
        "entry_flat": entry_flat,
        "entry_text_offsets": text_offsets,
        "entry_text_utf8": text_utf8,
        "translation_offsets": translation_offsets,
        "translation_flat": translation_flat,
        "group_ids": native.connected_components(translation_offsets, translation_flat),
    }
    trie = _build_trie(entry_offsets, entry_flat, np.diff(translation_offsets) > 0)
    arrays.update(zip(("trie_child_offsets", "trie_child_tokens", "trie_child_nodes", "trie_node_entry"), trie))
    lex = Lexicon(arrays, mode=mode, tokenizer_fingerprint=tokenizer.fingerprint,
                  tokenizer_type=tokenizer.tokenizer_type, stats=stats)
    logger.info("compiled lexicon: %d entries from %d groups", lex.num_entries, len(dictionary_result.groups))
    return lex


def _add_in_text_forms(tokenizer: Tokenizer, words: list[str], offsets: np.ndarray, flat: np.ndarray,
                       tokenizable: np.ndarray, edge_src: np.ndarray, edge_dst: np.ndarray):
    """Add the in-text form of every word of a script written without spaces.

    ``目录`` is ``▁目录`` after a space but ``目录`` inside ``列出目录内容``, and the scan sees the
    second far more often. Where the two forms differ, the in-text one becomes a word of its own
    (same text) with the word's translations as its own: it is matched and switched *from*, and
    never a translation of anything, so a switch *to* a word writes its after-a-space form.
    Returns the grown ``(words, offsets, flat, tokenizable, edge_src, edge_dst)`` and the number
    of forms added.
    """
    candidates = [i for i, w in enumerate(words) if tokenizable[i] and w and is_unspaced_script(w[0])]
    if not candidates:
        return words, offsets, flat, tokenizable, edge_src, edge_dst, 0
    v_offsets, v_flat = tokenizer.encode_words_in_text([words[i] for i in candidates])
    rows, added = [], []
    for k, i in enumerate(candidates):
        ids = v_flat[v_offsets[k]:v_offsets[k + 1]]
        if len(ids) and (tokenizer.unk is None or tokenizer.unk not in ids) and \
                not np.array_equal(ids, flat[offsets[i]:offsets[i + 1]]):
            rows.append(ids)
            added.append(i)
    if not added:
        return words, offsets, flat, tokenizable, edge_src, edge_dst, 0
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(lengths)])
    flat = np.concatenate([flat, *rows]).astype(np.int32, copy=False)
    form_of = np.full(len(words), -1, dtype=np.int64)
    form_of[added] = np.arange(len(words), len(words) + len(added))
    words = words + [words[i] for i in added]
    tokenizable = np.concatenate([tokenizable, np.ones(len(added), dtype=bool)])
    has_form = form_of[edge_src] >= 0
    edge_dst = np.concatenate([edge_dst, edge_dst[has_form]])
    edge_src = np.concatenate([edge_src, form_of[edge_src[has_form]]])
    return words, offsets, flat, tokenizable, edge_src, edge_dst, len(added)


def _word_graph(groups: Sequence[tuple[str, ...]], case_variants: bool
                ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The dictionary as a directed graph over distinct words.

    Returns ``(words, edge_src, edge_dst, source_words)``: words numbered in the order they
    first appear; an edge ``a -> b`` (int64 word ids) for every ordered pair of distinct members
    of a group, then for the capitalized groups (see `compile_lexicon`); the word id of every
    group's source (its first member, and with case variants its capitalized form).
    """
    # Members in file order are the words in the order they first appear (a group's members are
    # distinct); dict.fromkeys keeps that order, all loops below run in C or numpy.
    members = list(itertools.chain.from_iterable(groups))
    sizes = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    starts = np.zeros(len(groups), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    index = dict.fromkeys(members)
    index.update(zip(index, range(len(index))))
    member_ids = np.fromiter(map(index.__getitem__, members), dtype=np.int64, count=len(members))
    del members
    src_parts, dst_parts = [], []
    for k in np.unique(sizes).tolist():
        # Every ordered pair (i, j), i != j, of the members of every group of size k.
        pair_i, pair_j = np.nonzero(~np.eye(k, dtype=bool))
        first = starts[sizes == k][:, None]
        src_parts.append(member_ids[(first + pair_i).reshape(-1)])
        dst_parts.append(member_ids[(first + pair_j).reshape(-1)])
    sources = member_ids[starts].tolist()
    src: list[int] = []
    dst: list[int] = []
    word_id = index.setdefault  # setdefault(w, len(index)) numbers a new word, returns a known one
    capital_sources: list[str] = []
    if case_variants:
        for group in groups:
            capital = tuple(w[:1].upper() + w[1:] for w in group)
            changed = [c != w for c, w in zip(capital, group)]
            if not any(changed):
                continue
            if changed[0]:
                capital_sources.append(capital[0])
            for i, ci in enumerate(capital):
                if not changed[i]:
                    continue
                for j, cj in enumerate(capital):
                    if j != i and cj != ci:
                        src.append(word_id(ci, len(index)))
                        dst.append(word_id(cj, len(index)))
    # A capitalized source that no edge reached is no word of the lexicon.
    sources += [index[w] for w in capital_sources if w in index]
    src_parts.append(np.asarray(src, dtype=np.int64))
    dst_parts.append(np.asarray(dst, dtype=np.int64))
    return list(index), np.concatenate(src_parts), np.concatenate(dst_parts), np.asarray(sources, dtype=np.int64)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique's hash path is several times slower than a sort on millions of int64s.
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _take_rows(offsets: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a ragged array, as a new ragged array ``(offsets int64, flat)``."""
    lengths = offsets[rows + 1] - offsets[rows]
    out_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    # Index of every taken value: its row's start in `flat` plus its place in the row.
    gather = np.repeat(offsets[rows] - out_offsets[:-1], lengths) + np.arange(out_offsets[-1])
    return out_offsets, flat[gather]


def _utf8_table(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _first_sorted(words: Sequence[str], ids: np.ndarray, k: int) -> list[int]:
    return [i for _, i in heapq.nsmallest(k, ((words[i], i) for i in ids.tolist()))]


def load_lexicon(path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> Lexicon:
    """Read a `.lex` file, verify its content hash and, if given, the tokenizer.

    Raises:
        LexiconError: not a lexicon file, unsupported version, truncated or corrupt content, or
            `tokenizer` has a different fingerprint than the one the lexicon was built with.
    """
    path_str = os.fspath(path)
    with open(path_str, "rb") as f:
        blob = f.read()
    if len(blob) < _PREAMBLE.size:
        raise LexiconError(f"{path_str}: truncated lexicon file ({len(blob)} bytes, no header)")
    magic, version, header_len = _PREAMBLE.unpack_from(blob)
    if magic != LEX_MAGIC:
        raise LexiconError(
            f"{path_str}: not a lexicon file (magic {magic!r}, expected {LEX_MAGIC!r}); "
            "build one with tools/build_lexicon.py"
        )
    if version != LEX_VERSION:
        raise LexiconError(
            f"{path_str}: lexicon format version {version} is not supported (this code reads "
            f"version {LEX_VERSION}); rebuild it with tools/build_lexicon.py"
        )
    data_start = _aligned(_PREAMBLE.size + header_len)
    if len(blob) < data_start:
        raise LexiconError(f"{path_str}: truncated lexicon file ({len(blob)} bytes, header needs {data_start})")
    try:
        header = json.loads(blob[_PREAMBLE.size : _PREAMBLE.size + header_len].decode("utf-8"))
        expected = data_start + int(header["data_nbytes"])
        layout = {a["name"]: a for a in header["arrays"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise LexiconError(f"{path_str}: corrupt lexicon header ({exc})") from None
    if len(blob) != expected:
        raise LexiconError(
            f"{path_str}: truncated or corrupt lexicon file: expected {expected} bytes, found {len(blob)}"
        )
    arrays = {}
    for name, dt in _ARRAY_DTYPES.items():
        try:
            a = layout[name]
            count = int(np.prod(a["shape"], dtype=np.int64))
            begin = data_start + int(a["offset"])
            if np.dtype(a["dtype"]) != dt or count * dt.itemsize != a["nbytes"] or begin + a["nbytes"] > len(blob):
                raise ValueError("inconsistent layout")
            arrays[name] = np.frombuffer(blob, dtype=dt, count=count, offset=begin).reshape(a["shape"])
        except (KeyError, ValueError, TypeError) as exc:
            raise LexiconError(f"{path_str}: corrupt lexicon: array {name!r} ({exc})") from None
    if header.get("mode") not in MODES:
        raise LexiconError(f"{path_str}: corrupt lexicon header (mode {header.get('mode')!r})")
    lex = Lexicon(
        arrays,
        mode=header["mode"],
        tokenizer_fingerprint=header.get("tokenizer_fingerprint", ""),
        tokenizer_type=header.get("tokenizer_type", ""),
        stats=header.get("stats"),
        sha256=header.get("sha256"),
        path=path_str,
    )
    if tokenizer is not None and tokenizer.fingerprint != lex.tokenizer_fingerprint:
        raise LexiconError(
            f"{path_str}: lexicon was built for tokenizer fingerprint {lex.tokenizer_fingerprint} "
            f"({lex.tokenizer_type}), but the tokenizer in use ({tokenizer.tokenizer_type} "
            f"{tokenizer.model_path}) has fingerprint {tokenizer.fingerprint}; rebuild the lexicon "
            f"with tools/build_lexicon.py --tokenizer-type {tokenizer.tokenizer_type} "
            f"--tokenizer-model {tokenizer.model_path}"
        )
    return lex


# ------------------------------------------------------------------------------- helpers


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _native_order(a: np.ndarray) -> np.ndarray:
    # The .lex file is little-endian; the extension only accepts native-order buffers.
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


def _ragged(rows: Sequence[Sequence[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((x for r in rows for x in r), dtype=dtype, count=int(offsets[-1]))
    return offsets, flat


def _build_trie(entry_offsets: np.ndarray, entry_flat: np.ndarray, include: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR token-id trie over the included entries, inserted in entry order (compiled):
    (child_offsets int64, child_tokens int32, child_nodes int32, node_entry int32); children
    sorted by token for binary search."""
    return _native().build_trie(np.ascontiguousarray(entry_offsets, dtype=np.int64),
                                np.ascontiguousarray(entry_flat, dtype=np.int32),
                                np.ascontiguousarray(include, dtype=np.uint8))
