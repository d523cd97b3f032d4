"""Lexicon quality: corpus frequencies, the filters that use them, and the report.

A real dictionary is noisy where it matters most: the most frequent words (``the``, ``of``,
``de``) have the most matches and, often, the worst translations (FreeDict eng-spa lists
``the -> Holanda``). Counting how often each dictionary word occurs in a corpus lets the build
drop them (stop-words), keep the translations that are actually used, and show what the lexicon
will do to the training data before any training runs.

Corpus: raw text, the input ``tools/preprocess_data.py`` reads, given before preprocessing (which
needs the finished lexicon for its sidecar): ``.jsonl`` (one ``{"text": ...}`` object per line)
or any other file with one document per line, optionally gzip/bzip2/xz-compressed. Each file is
tokenized with the lexicon's tokenizer and scanned exactly as preprocessing will scan it, so a
word's *frequency* is its number of matches: occurrences that the scan would mark for switching
(with ``case_variants`` the Capitalized form's matches count for the word too). Give one file per
language to get coverage per language.

Sides: the dictionary's first column (each group's first member) is the *source* side, the other
members the *target* side; a word can be on both. Filters, in this order, each counting the
groups it drops (``dropped`` in the summary):

- ``stopwords`` FILE: one word per line (``#`` comments), removed wherever it occurs, matched
  case-insensitively;
- ``stopwords_top_k`` N: on each side, the N dictionary words with the most matches are removed
  from that side;
- ``min_frequency`` F: words with fewer than F matches are removed (on both sides: with a corpus of
  one language only, the other side's words all have 0 matches);
- ``max_translations`` K: every word keeps its K translations (groups) with the most matches,
  ties and no corpus resolved by dictionary order; a group stays only if every member keeps it.

A group left with fewer than two members is dropped.

Report (`lexicon_report`): coverage per corpus file (share of its tokens inside matched spans, and
by the side of the matched entry), the entries with the most matches, the count and examples of
scannable entries never matched, and the histogram of group sizes. A *group* is a connected
component of the translation graph: the words reachable through translations of translations
(``bank - banco - bench - banca - ...``); polysemy chains components together, so group sizes say
how tangled the dictionary is, and a group id only says which words must never be used as each
other's negatives.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from megatron_prealign.lexicon.dictionary import DictionaryReadResult, LexiconError, open_text_lines
from megatron_prealign.lexicon.lexicon import Lexicon
from megatron_prealign.fileio import atomic_path
from megatron_prealign.lexicon.tokenizer import WORD_START, Tokenizer
from megatron_prealign.log import get_logger

__all__ = [
    "GROUP_EXPLANATION",
    "CorpusScan",
    "FilterOutcome",
    "filter_dictionary",
    "format_report",
    "lexicon_report",
    "read_stopwords",
    "scan_corpus",
    "tokenize_corpus",
    "word_entries",
    "word_frequencies",
    "write_report",
]

logger = get_logger(__name__)

GROUP_EXPLANATION = (
    "a group is a connected component of the translation graph: words linked through translations "
    "of translations (bank - banco - bench ...); big groups come from polysemy chaining words together"
)

# Documents tokenized per scan call: bounds the memory of one batch's concatenated ids.
_BATCH_DOCUMENTS = 4096
_PROGRESS_SECONDS = 30.0
_TOP_ENTRIES = 50
_NEVER_MATCHED_EXAMPLES = 50


@dataclass
class CorpusTokens:
    """One corpus file, tokenized: documents back to back."""

    path: str
    tokens: np.ndarray
    doc_lengths: np.ndarray

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.size)


def tokenize_corpus(path: str, tokenizer: Tokenizer, json_key: str = "text") -> CorpusTokens:
    """Token ids of every document of `path` (see the module docstring for the layout).

    Raises:
        LexiconError: a ``.jsonl`` line that is not a JSON object with a string `json_key`, or
            a line that is not UTF-8 (naming ``path:line``); a file without documents.
        FileNotFoundError: `path` does not exist.
    """
    jsonl = path.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".jsonl.xz"))
    ids: list[np.ndarray] = []
    lengths: list[int] = []
    started = last = time.monotonic()
    for lineno, line in open_text_lines(path):
        if jsonl:
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise LexiconError(f"{path}:{lineno}: bad JSON in --corpus file ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get(json_key), str):
                raise LexiconError(f'{path}:{lineno}: expected a JSON object with a string "{json_key}" '
                                   f"(--corpus-json-key)")
            text = record[json_key]
        else:
            text = line
        doc = np.asarray(tokenizer.encode(text), dtype=np.int32)
        ids.append(doc)
        lengths.append(doc.size)
        now = time.monotonic()
        if now - last > _PROGRESS_SECONDS:
            logger.info("%s: %d documents, %d tokens tokenized (%.0f s)", path, len(lengths), sum(lengths),
                        now - started)
            last = now
    if not lengths:
        raise LexiconError(f"{path}: no documents in --corpus file (one per line, or one JSON object per line)")
    return CorpusTokens(path, np.concatenate(ids) if ids else np.zeros(0, np.int32),
                        np.asarray(lengths, dtype=np.int64))


@dataclass
class CorpusScan:
    """Matches of a lexicon's entries in one corpus file."""

    path: str
    documents: int
    tokens: int
    matches: np.ndarray
    """int64 (E,): matches per entry."""
    covered: np.ndarray
    """int64 (E,): tokens inside the matches of each entry."""


def scan_corpus(lexicon: Lexicon, corpus: CorpusTokens) -> CorpusScan:
    """Scan `corpus` document by document as preprocessing does; per-entry counts."""
    num = lexicon.num_entries
    matches = np.zeros(num, np.int64)
    covered = np.zeros(num, np.int64)
    ends = np.concatenate([[0], np.cumsum(corpus.doc_lengths)])
    for first in range(0, corpus.doc_lengths.size, _BATCH_DOCUMENTS):
        last = min(first + _BATCH_DOCUMENTS, corpus.doc_lengths.size)
        tokens = corpus.tokens[ends[first] : ends[last]]
        triples, _, _ = lexicon.scan_documents(tokens, corpus.doc_lengths[first:last])
        entry_ids, lengths = triples[2::3], triples[1::3]
        matches += np.bincount(entry_ids, minlength=num)
        covered += np.bincount(entry_ids, weights=lengths, minlength=num).astype(np.int64)
    return CorpusScan(corpus.path, int(corpus.doc_lengths.size), corpus.num_tokens, matches, covered)


def _entry_of_tokens(lexicon: Lexicon) -> dict[tuple[int, ...], int]:
    return {tuple(lexicon.entry_tokens(i).tolist()): i for i in range(lexicon.num_entries)}


def _capitalized(word: str) -> str:
    return word[:1].upper() + word[1:]


def word_entries(words: Iterable[str], lexicon: Lexicon, tokenizer: Tokenizer) -> dict[str, int]:
    """Entry id of each word that has one in `lexicon` (as `compile_lexicon` tokenized it)."""
    index = _entry_of_tokens(lexicon)
    out = {}
    for w in words:
        e = index.get(tuple(tokenizer.encode_word(w)))
        if e is not None:
            out[w] = e
    return out


def word_frequencies(
    result: DictionaryReadResult,
    lexicon: Lexicon,
    tokenizer: Tokenizer,
    scans: Sequence[CorpusScan],
    case_variants: bool = False,
) -> dict[str, int]:
    """Matches of each dictionary word of `result` over `scans` of `lexicon` (compiled from it)."""
    matches = np.zeros(lexicon.num_entries, np.int64)
    for s in scans:
        matches += s.matches
    words = {w for g in result.groups for w in g}
    forms = set(words) | ({_capitalized(w) for w in words} if case_variants else set())
    entry = word_entries(forms, lexicon, tokenizer)
    freq = {}
    for w in words:
        ids = {entry[w]} if w in entry else set()
        if case_variants and _capitalized(w) in entry:
            ids.add(entry[_capitalized(w)])
        freq[w] = int(sum(matches[i] for i in ids))
    return freq


def read_stopwords(path: str) -> set[str]:
    """Case-folded words of a stop-word file (one per line, ``#`` comments)."""
    words = set()
    for _, line in open_text_lines(path):
        word = line.strip()
        if word and not word.startswith("#"):
            words.add(word.casefold())
    return words


@dataclass
class FilterOutcome:
    """What `filter_dictionary` removed, for the report."""

    dropped_groups: dict[str, int] = field(default_factory=dict)
    stopwords: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    """Per side, the top-k stop-words removed with their matches (most frequent first)."""
    removed_words: dict[str, int] = field(default_factory=dict)
    """Per filter, how many distinct words it removed."""


def filter_dictionary(
    result: DictionaryReadResult,
    frequency: Mapping[str, int] | None,
    *,
    stopwords: set[str] | None = None,
    stopwords_top_k: int = 0,
    min_frequency: int = 0,
    max_translations: int = 0,
) -> tuple[DictionaryReadResult, FilterOutcome]:
    """Apply the filters of the module docstring to `result`'s groups.

    Args:
        result: the dictionary as read.
        frequency: matches per word (`word_frequencies`); needed by `stopwords_top_k` and
            `min_frequency`, optional for `max_translations`.
        stopwords: case-folded words to remove everywhere.
        stopwords_top_k: remove the N most matched words of each side.
        min_frequency: remove words with fewer matches.
        max_translations: keep at most K translations (groups) per word; 0 keeps all.

    Returns:
        A copy of `result` with the remaining groups (``dropped`` gains one count per filter
        that dropped groups) and what was removed.
    """
    if (stopwords_top_k or min_frequency) and frequency is None:
        raise ValueError("stopwords_top_k and min_frequency need corpus frequencies (--corpus)")
    freq = frequency or {}
    outcome = FilterOutcome()
    groups = list(result.groups)

    def remove(reason: str, source: set[str], target: set[str]) -> None:
        nonlocal groups
        kept, seen, dropped = [], set(), 0
        for g in groups:
            members = ([g[0]] if g[0] not in source else []) + [w for w in g[1:] if w not in target]
            members = tuple(dict.fromkeys(members))
            if len(members) < 2 or members in seen:
                dropped += 1
                continue
            seen.add(members)
            kept.append(members)
        groups = kept
        outcome.removed_words[reason] = outcome.removed_words.get(reason, 0) + len(source | target)
        if dropped:
            outcome.dropped_groups[reason] = outcome.dropped_groups.get(reason, 0) + dropped

    if stopwords:
        listed = {w for g in groups for w in g if w.casefold() in stopwords}
        remove("stopword", listed, listed)
    if stopwords_top_k:
        sides = {"source": {g[0] for g in groups}, "target": {w for g in groups for w in g[1:]}}
        top = {}
        for side, words in sides.items():
            ranked = sorted((w for w in words if freq.get(w, 0) > 0), key=lambda w: (-freq[w], w))
            top[side] = ranked[:stopwords_top_k]
            outcome.stopwords[side] = [(w, freq[w]) for w in top[side]]
        remove("stopword", set(top["source"]), set(top["target"]))
    if min_frequency:
        rare = {w for g in groups for w in g if freq.get(w, 0) < min_frequency}
        remove("min_frequency", rare, rare)
    if max_translations:
        groups = _limit_translations(groups, freq, max_translations, outcome)

    filtered = dataclasses.replace(result, groups=groups, dropped_by_filter={
        **result.dropped_by_filter, **outcome.dropped_groups})
    return filtered, outcome


def _limit_translations(groups: list[tuple[str, ...]], freq: Mapping[str, int], k: int,
                        outcome: FilterOutcome) -> list[tuple[str, ...]]:
    by_word: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        for w in g:
            by_word.setdefault(w, []).append(i)
    keep = np.zeros(len(groups), dtype=np.int64)  # members that keep the group
    limited = 0
    for w, ids in by_word.items():
        if len(ids) > k:
            limited += 1
            # Stable: equal scores (and no corpus) keep dictionary order.
            ids = sorted(ids, key=lambda i: -sum(freq.get(m, 0) for m in groups[i] if m != w))[:k]
        keep[ids] += 1
    kept = [g for i, g in enumerate(groups) if keep[i] == len(g)]
    outcome.removed_words["max_translations"] = limited
    if len(kept) < len(groups):
        outcome.dropped_groups["max_translations"] = len(groups) - len(kept)
    return kept


def _scannable(lexicon: Lexicon) -> np.ndarray:
    has_translation = np.diff(lexicon.translation_offsets) > 0
    if lexicon.mode == "longest-match":
        return has_translation
    first = lexicon.entry_flat[lexicon.entry_offsets[:-1]]
    classes = lexicon.token_classes
    starts = np.zeros(lexicon.num_entries, dtype=bool)
    inside = first < classes.size
    starts[inside] = classes[first[inside]] == WORD_START
    return has_translation & starts


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    """Number of groups per size bucket: ``"1"``, ``"2"``, ``"3-4"``, ``"5-8"``, ... (empty buckets left out)."""
    out: dict[str, int] = {}
    lo, hi = 1, 1
    while sizes.size and lo <= sizes.max():
        n = int(((sizes >= lo) & (sizes <= hi)).sum())
        if n:
            out[str(lo) if lo == hi else f"{lo}-{hi}"] = n
        lo, hi = hi + 1, hi * 2
    return out


def lexicon_report(
    lexicon: Lexicon,
    result: DictionaryReadResult,
    tokenizer: Tokenizer,
    scans: Sequence[CorpusScan],
    outcome: FilterOutcome | None = None,
    case_variants: bool = False,
) -> dict:
    """The quality report of `lexicon` (compiled from `result`) over `scans` (may be empty)."""
    num = lexicon.num_entries
    sources = {g[0] for g in result.groups}
    targets = {w for g in result.groups for w in g[1:]}
    forms = sources | targets
    if case_variants:
        forms |= {_capitalized(w) for w in forms}
    entry = word_entries(forms, lexicon, tokenizer)
    side = np.zeros(num, np.int8)  # bit 1: source, bit 2: target
    for w, e in entry.items():
        base = {w, w[:1].lower() + w[1:]}
        if base & sources:
            side[e] |= 1
        if base & targets:
            side[e] |= 2
    side_names = {1: "source", 2: "target", 3: "both"}

    report: dict = {
        "dictionary": result.path,
        "format": result.format,
        "entries": num,
        "scannable_entries": int(_scannable(lexicon).sum()),
        "mode": lexicon.mode,
        "dropped": dict(result.dropped),
    }
    if outcome is not None:
        report["filters"] = {
            "dropped_groups": dict(outcome.dropped_groups),
            "removed_words": dict(outcome.removed_words),
            "top_k_stopwords": {s: [[w, n] for w, n in ws] for s, ws in outcome.stopwords.items()},
        }
    matches = np.zeros(num, np.int64)
    covered = np.zeros(num, np.int64)
    corpora = []
    for s in scans:
        matches += s.matches
        covered += s.covered
        row = {
            "path": s.path,
            "documents": s.documents,
            "tokens": s.tokens,
            "covered_tokens": int(s.covered.sum()),
            "coverage": float(s.covered.sum() / s.tokens) if s.tokens else 0.0,
            "coverage_by_side": {
                name: float(s.covered[side == bits].sum() / s.tokens) if s.tokens else 0.0
                for bits, name in side_names.items()
            },
        }
        corpora.append(row)
    report["corpus"] = corpora
    if scans:
        order = np.argsort(-matches, kind="stable")
        total = int(covered.sum())
        report["top_entries"] = [
            {
                "entry": lexicon.entry_text(int(i)),
                "side": side_names.get(int(side[i]), "none"),
                "matches": int(matches[i]),
                "share_of_covered_tokens": float(covered[i] / total) if total else 0.0,
                "translations": [lexicon.entry_text(int(t)) for t in lexicon.translations(int(i))[:8]],
            }
            for i in order[:_TOP_ENTRIES]
            if matches[i] > 0
        ]
        never = np.flatnonzero(_scannable(lexicon) & (matches == 0))
        report["never_matched"] = {
            "count": int(never.size),
            "share_of_scannable": float(never.size / max(1, report["scannable_entries"])),
            "examples": [lexicon.entry_text(int(i)) for i in never[:_NEVER_MATCHED_EXAMPLES]],
        }
    sizes = np.bincount(lexicon.group_ids) if num else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    largest = int(np.argmax(np.bincount(lexicon.group_ids))) if num else -1
    members = np.flatnonzero(lexicon.group_ids == largest)[:12] if num else []
    report["groups"] = {
        "what_a_group_is": GROUP_EXPLANATION,
        "count": int(sizes.size),
        "largest": int(sizes.max()) if sizes.size else 0,
        "largest_examples": [lexicon.entry_text(int(i)) for i in members],
        "size_histogram": _histogram(sizes),
    }
    return report


def format_report(report: dict, top: int = 10, examples: int = 8) -> str:
    """The key lines of `report` for a terminal."""
    lines = []
    for c in report.get("corpus", []):
        by_side = ", ".join(f"{k} {v:.1%}" for k, v in c["coverage_by_side"].items() if v)
        lines.append(f"coverage:           {c['coverage']:.1%} of {c['tokens']} tokens in {c['path']}"
                     + (f" ({by_side})" if by_side else ""))
    for s, ws in report.get("filters", {}).get("top_k_stopwords", {}).items():
        if ws:
            lines.append(f"stop-words ({s}):{' ' * max(1, 6 - len(s))}" + ", ".join(f"{w} {n}" for w, n in ws[:examples])
                         + (f" ... ({len(ws)})" if len(ws) > examples else ""))
    if report.get("top_entries"):
        lines.append("top entries:        " + ", ".join(
            f"{e['entry']} {e['matches']} (-> {', '.join(e['translations'][:3])})" for e in report["top_entries"][:top]))
    if "never_matched" in report:
        nm = report["never_matched"]
        eg = f", e.g. {', '.join(nm['examples'][:examples])}" if nm["examples"] else ""
        lines.append(f"never matched:      {nm['count']} of {report['scannable_entries']} scannable entries "
                     f"({nm['share_of_scannable']:.1%}){eg}")
    g = report["groups"]
    hist = ", ".join(f"{k}: {v}" for k, v in g["size_histogram"].items())
    lines.append(f"group sizes:        {hist} (largest {g['largest']}: {', '.join(g['largest_examples'][:6])}, ...)")
    lines.append(f"                    {g['what_a_group_is']}")
    return "\n".join(lines)


def write_report(report: dict, path: str) -> None:
    """`report` as indented JSON at `path`, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=1)
            f.write("\n")

