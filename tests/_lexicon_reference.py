"""The lexicon compiler as it was before it was batched and compiled: pure Python, word by word,
with dict-of-dict tries and a Python union-find. Kept only as the oracle of
tests/unit/test_lexicon_compile_scale.py, which checks that `compile_lexicon` gives the same
arrays (hence the same content hash) on the test dictionaries.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from megatron_prealign.lexicon.dictionary import DictionaryReadResult, LexiconError
from megatron_prealign.lexicon.tokenizer import is_unspaced_script
from megatron_prealign.lexicon.lexicon import MODES, Lexicon
from megatron_prealign.log import get_logger

logger = get_logger(__name__)


def reference_compile_lexicon(
    dictionary_result: DictionaryReadResult,
    tokenizer,
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
    edges: list[tuple[str, str]] = []
    sources: list[str] = []
    for group in dictionary_result.groups:
        sources.append(group[0])
        edges.extend((a, b) for a in group for b in group if a != b)
    if case_variants:
        for group in dictionary_result.groups:
            capital = tuple(w[:1].upper() + w[1:] for w in group)
            changed = [c != w for c, w in zip(capital, group)]
            if not any(changed):
                continue
            if changed[0]:
                sources.append(capital[0])
            edges.extend(
                (capital[i], capital[j])
                for i in range(len(group))
                if changed[i]
                for j in range(len(group))
                if j != i and capital[j] != capital[i]
            )

    entry_of_word: dict[str, int] = {}
    entry_of_tokens: dict[tuple[int, ...], int] = {}
    entry_tokens: list[tuple[int, ...]] = []
    entry_texts: list[str] = []
    untokenizable: set[str] = set()
    unk = tokenizer.unk

    def entry(word: str) -> int | None:
        if word in entry_of_word:
            return entry_of_word[word]
        if word in untokenizable:
            return None
        ids = tuple(tokenizer.encode_word(word))
        # Any unknown id, not only an all-unknown encoding: the entry would stand for every word
        # with some unrepresentable character at that place ("жаба" and "шаба" alike when "ж" and
        # "ш" are unknown), so the scan would switch words that are not this one, and switching
        # *to* it would write unknown tokens into the model's input.
        if not ids or (unk is not None and unk in ids):
            untokenizable.add(word)
            return None
        e = entry_of_tokens.get(ids)
        if e is None:
            e = entry_of_tokens[ids] = len(entry_tokens)
            entry_tokens.append(ids)
            entry_texts.append(word)
        entry_of_word[word] = e
        return e

    for a, b in edges:
        entry(a)
        entry(b)
    # In-text forms of words of scripts written without spaces: the word's tokens right after
    # another character, an entry of their own with the word's translations (never a target).
    in_text_form: dict[str, int] = {}
    probe = tokenizer.encode("\u3002")
    for word in list(entry_of_word):
        if not is_unspaced_script(word[0]):
            continue
        ids = tokenizer.encode("\u3002" + word)
        if ids[: len(probe)] != probe:
            continue
        ids = tuple(ids[len(probe):])
        if not ids or (unk is not None and unk in ids) or ids == entry_tokens[entry_of_word[word]]:
            continue
        e = entry_of_tokens.get(ids)
        if e is None:
            e = entry_of_tokens[ids] = len(entry_tokens)
            entry_tokens.append(ids)
            entry_texts.append(word)
        in_text_form[word] = e
    translations: list[set[int]] = [set() for _ in entry_tokens]
    identical_tokens = 0
    for a, b in edges:
        eb = entry_of_word.get(b)
        for ea in (entry_of_word.get(a), in_text_form.get(a)):
            if ea is None or eb is None:
                continue
            if ea == eb:
                identical_tokens += 1
            else:
                translations[ea].add(eb)

    if untokenizable:
        examples = ", ".join(repr(w) for w in sorted(untokenizable)[:5])
        logger.warning("%s: %d words the tokenizer cannot represent (empty or unknown-token ids) are dropped, "
                       "e.g. %s", dictionary_result.path, len(untokenizable), examples)
    if not any(translations):
        raise LexiconError(
            f"{dictionary_result.path}: no entry with a translation is left for the {tokenizer.tokenizer_type} "
            f"tokenizer ({len(dictionary_result.groups)} groups: {len(untokenizable)} words untokenizable, "
            f"{identical_tokens} translations with the same tokens as their word)"
        )
    source_entries = {entry_of_word[w] for w in sources if w in entry_of_word}
    dropped = dict(dictionary_result.dropped)
    dropped["untokenizable"] = len(untokenizable)
    dropped["identical_tokens"] = identical_tokens
    stats = {
        "dictionary": os.path.basename(dictionary_result.path),
        "dictionary_format": dictionary_result.format,
        "dictionary_groups": len(dictionary_result.groups),
        "case_variants": case_variants,
        "unique_sources": len(source_entries),
        "in_text_forms": len(in_text_form),
        "dropped": dropped,
    }
    trans = [sorted(t) for t in translations]
    arrays = {"token_classes": tokenizer.token_classes()}
    arrays["entry_offsets"], arrays["entry_flat"] = _ragged(entry_tokens, np.int32)
    encoded = [t.encode("utf-8") for t in entry_texts]
    arrays["entry_text_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)])
    arrays["entry_text_utf8"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    arrays["translation_offsets"], arrays["translation_flat"] = _ragged(trans, np.int32)
    arrays["group_ids"] = _components(len(entry_tokens), trans)
    trie = _build_trie(entry_tokens, [bool(t) for t in trans])
    arrays.update(zip(("trie_child_offsets", "trie_child_tokens", "trie_child_nodes", "trie_node_entry"), trie))
    return Lexicon(arrays, mode=mode, tokenizer_fingerprint=tokenizer.fingerprint,
                   tokenizer_type=tokenizer.tokenizer_type, stats=stats)


def _ragged(rows: Sequence[Sequence[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((x for r in rows for x in r), dtype=dtype, count=int(offsets[-1]))
    return offsets, flat


def _components(num: int, translations: Sequence[Sequence[int]]) -> np.ndarray:
    """Connected components of the (undirected) translation graph, numbered by first entry."""
    parent = list(range(num))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, targets in enumerate(translations):
        for b in targets:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(num)]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int32)


def _build_trie(
    entry_tokens: Sequence[tuple[int, ...]], include: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR token-id trie over the included entries: (child_offsets int64, child_tokens int32,
    child_nodes int32, node_entry int32); children sorted by token for binary search."""
    children: list[dict[int, int]] = [{}]
    node_entry = [-1]
    for e, seq in enumerate(entry_tokens):
        if not include[e]:
            continue
        node = 0
        for t in seq:
            nxt = children[node].get(t)
            if nxt is None:
                nxt = len(children)
                children[node][t] = nxt
                children.append({})
                node_entry.append(-1)
            node = nxt
        node_entry[node] = e
    offsets = np.zeros(len(children) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in children], out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), dtype=np.int32)
    nodes = np.empty(int(offsets[-1]), dtype=np.int32)
    for n, c in enumerate(children):
        if c:
            items = sorted(c.items())
            tokens[offsets[n] : offsets[n + 1]] = [t for t, _ in items]
            nodes[offsets[n] : offsets[n + 1]] = [m for _, m in items]
    return offsets, tokens, nodes, np.asarray(node_entry, dtype=np.int32)
