"""dictd / FreeDict dictionaries as they ship: ``NAME.index`` + ``NAME.dict.dz`` (or ``NAME.dict``).

The ``.index`` has one line per headword, ``headword<TAB>offset<TAB>length`` (offset and length
in dictd's base64 digits ``A-Za-z0-9+/``), pointing into the data file; ``.dict.dz`` is dictzip,
which is gzip with an extra header field, so Python's gzip reads it. Several index lines may
point at the same entry (an inflected form indexed to its lemma); each entry is read once.

An entry's text, as FreeDict writes it::

    house /haʊs/ <n>                        headword line: word, pronunciation, notes
    1. casa, hogar <fem>                    numbered senses, comma-separated translations
    2. vivienda [arch.]
       "a big house" - una casa grande      an example
       Synonym: {home}                      labelled notes and {cross-references}
     see: {houses}

The headword line gives the headword with its capitalization (the index lower-cases it); its
``/.../`` pronunciation, ``<...>`` part-of-speech and ``[...]``/``(...)`` notes are dropped. Every
other line is a sense line unless it is an example (starts with a quote) or a labelled note
(``see:``, ``Synonyms:``, ``Note:``...); from sense lines the numbering and every ``<> [] () {}``
note are dropped and the rest split on ``,`` and ``;``. Translations with a space are phrases:
dropped and counted, as the ``trans`` reader does, and so is an entry whose headword is one.
Affixes (``archi-``) and elided fragments (``hace...``) are dropped as ``fragment``. The
``00-database-*`` entries (the dictionary's name, licence and URL) are not words and are skipped.

**Truncated headwords.** Some FreeDict databases lost the later words of multi-word headwords,
keeping their pronunciation: FreeDict eng-spa 0.3.1 has ``the /ðəneðələndz/ -> Holanda`` ("the
Netherlands"), ``take /teikkɛər/ -> cuidar``, ``good /gudmɔːniŋ/ -> buenosdías`` next to the
real ``take /teik/`` entry. Read as they stand, ``the`` would translate to ``Holanda``. An entry
is dropped as ``truncated`` when its pronunciation (stress and length marks aside) extends by two
or more symbols the pronunciation of another entry with the same headword, or, for a one-word
alphabetic headword, is at least 4 symbols and 1.6 times longer than the word. On FreeDict
eng-deu (168k such headwords, pronunciations per word) the second rule fires on 20, all
spelled-out acronyms (``BMW /bˌiːˌɛmdˈʌbəljˌuː/``).
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["DictdPaths", "dictd_paths", "is_dictd_path", "read_dictd_entries"]

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_INDEX_LINE = re.compile(r"[^\t]*\t[A-Za-z0-9+/]+\t[A-Za-z0-9+/]+(\t[^\t]*)?")
_META = ("00database", "00-database")

# A pronunciation stands alone between spaces: "pre-empt/preempt" is a word, " /pɹiːˈɛmpt/ " not.
_PRONUNCIATION = re.compile(r"(?<!\S)/[^/\n]*/(?!\S)")
_NOTE = re.compile(r"<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}")
_LABEL = re.compile(r"[A-Za-z][A-Za-z ]{0,30}:(\s|$)")
_NUMBERING = re.compile(r"(\d+|[a-z])[.)]\s+")
_QUOTES = "\"'“„«‘‚"
_HYPHENS = "-‐‑–"
_ELLIPSIS = ("...", "…")
_PRONUNCIATION_MARKS = re.compile(r"[ˈˌːˑ'\s]")


@dataclass(frozen=True)
class DictdPaths:
    index: str
    data: str


def _stem(path: str) -> str:
    for suffix in (".index", ".dict.dz", ".dict"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def is_dictd_path(path: str) -> bool:
    """True when `path` names a dictd dictionary: its ``.index``, its data file (with the index
    beside it) or the stem both share."""
    stem = _stem(path)
    if path.endswith(".index"):
        return True
    return os.path.isfile(stem + ".index") and (
        os.path.isfile(stem + ".dict.dz") or os.path.isfile(stem + ".dict")
    )


def dictd_paths(path: str) -> DictdPaths:
    """The index and data file of the dictd dictionary `path` names (see `is_dictd_path`).

    Raises:
        FileNotFoundError: one of the two is missing (the message names both).
    """
    stem = _stem(path)
    index = stem + ".index"
    if path.endswith((".dict.dz", ".dict")):
        data = [path]
    else:
        data = [stem + ".dict.dz", stem + ".dict"]
    found = [d for d in data if os.path.isfile(d)]
    if not os.path.isfile(index) or not found:
        missing = [p for p in [index, *data] if not os.path.isfile(p)]
        raise FileNotFoundError(
            f"{path}: a dictd dictionary is {stem}.index with {stem}.dict.dz (or .dict); "
            f"missing: {', '.join(missing)}"
        )
    return DictdPaths(index=index, data=found[0])


@dataclass
class _Entry:
    location: str
    headwords: list[str]
    key: str
    pronunciation: str
    translations: list[str]
    phrases: int
    fragments: int
    phrase_headword: bool


def read_dictd_entries(
    path: str, report: Callable[[str], None]
) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    """Read the dictd dictionary `path` names into ``(headword, translations)`` pairs.

    Args:
        path: the ``.index``, the ``.dict``/``.dict.dz`` or their stem.
        report: called with ``file:line: message`` for each malformed index line or entry; it
            raises or counts (``skip_invalid``).

    Returns:
        The pairs (one per headword alternative of each kept entry) and counts: ``entries``
        (distinct entries read, meta entries aside), ``phrase``, ``fragment``, ``truncated``.

    Raises:
        FileNotFoundError: index or data file missing.
        OSError: the data file is not gzip/dictzip although named ``.dz`` (the message names it).
    """
    paths = dictd_paths(path)
    data = _read_data(paths.data)
    entries: list[_Entry] = []
    seen: set[tuple[int, int]] = set()
    with open(paths.index, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{paths.index}:{lineno}"
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                report(f"{where}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset {exc.start})")
                continue
            if not text.strip():
                continue
            if not _INDEX_LINE.fullmatch(text):
                report(f"{where}: expected 'headword<TAB>offset<TAB>length' (dictd .index line)")
                continue
            fields = text.split("\t")
            headword = fields[0]
            if headword.startswith(_META):
                continue
            offset, length = _b64(fields[1]), _b64(fields[2])
            if offset + length > len(data):
                report(f"{where}: entry {headword!r} at bytes {offset}+{length} lies past the end of "
                       f"{paths.data} ({len(data)} bytes)")
                continue
            if (offset, length) in seen:
                continue
            seen.add((offset, length))
            try:
                body = data[offset : offset + length].decode("utf-8")
            except UnicodeDecodeError as exc:
                report(f"{where}: entry {headword!r} in {paths.data} has invalid UTF-8 at byte "
                       f"{offset + exc.start}")
                continue
            entries.append(_parse_entry(where, fields[3] if len(fields) > 3 and fields[3] else headword, body))

    truncated = _truncated(entries)
    counts = {"entries": len(entries), "phrase": 0, "fragment": 0, "truncated": len(truncated)}
    pairs: list[tuple[str, list[str]]] = []
    for i, entry in enumerate(entries):
        if i in truncated:
            continue
        if entry.phrase_headword:
            counts["phrase"] += 1
            continue
        counts["phrase"] += entry.phrases
        counts["fragment"] += entry.fragments
        if entry.translations:
            pairs.extend((h, entry.translations) for h in entry.headwords)
    return pairs, counts


def _read_data(path: str) -> bytes:
    if not path.endswith(".dz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise OSError(f"{path}: not a readable dictzip (gzip) file: {exc}") from None


def _b64(digits: str) -> int:
    n = 0
    for c in digits:
        n = n * 64 + _B64[c]
    return n


def _parse_entry(location: str, index_headword: str, body: str) -> _Entry:
    lines = body.split("\n")
    first = lines[0]
    pronunciation = _PRONUNCIATION.search(_NOTE.sub(" ", first))
    headword_text = _clean(first)
    # FreeDict repeats the headword (with its case) on the entry's first line; a database that
    # does not starts right away with the translations.
    if pronunciation is not None or _fold(headword_text) == _fold(index_headword):
        rest = lines[1:]
    else:
        headword_text, rest = " ".join(index_headword.split()), lines
    key = headword_text.lower()
    phrase_headword = " " in headword_text or not headword_text
    headwords = [h for h in headword_text.split("/") if h] if not phrase_headword else []
    translations: list[str] = []
    phrases = fragments = 0
    for line in rest:
        stripped = line.strip()
        if not stripped or stripped[0] in _QUOTES or _LABEL.match(stripped):
            continue
        stripped = _NUMBERING.sub("", stripped, count=1)
        for item in re.split(r"[,;]", _clean(stripped)):
            item = item.strip()
            if not item:
                continue
            if " " in item:
                phrases += 1
            elif item[0] in _HYPHENS or item[-1] in _HYPHENS or any(e in item for e in _ELLIPSIS):
                fragments += 1
            elif item not in translations:
                translations.append(item)
    return _Entry(
        location=location,
        headwords=headwords,
        key=key,
        pronunciation=_PRONUNCIATION_MARKS.sub("", pronunciation.group(0).strip("/")) if pronunciation else "",
        translations=translations,
        phrases=phrases,
        fragments=fragments,
        phrase_headword=phrase_headword,
    )


def _clean(text: str) -> str:
    """`text` without notes and pronunciations, whitespace collapsed."""
    return " ".join(_PRONUNCIATION.sub(" ", _NOTE.sub(" ", text)).split())


def _fold(text: str) -> str:
    """dictd's index form of a headword: lower case, letters, digits and spaces only."""
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _truncated(entries: list[_Entry]) -> set[int]:
    prons: dict[str, set[str]] = {}
    for e in entries:
        if e.pronunciation:
            prons.setdefault(e.key, set()).add(e.pronunciation)
    out = set()
    for i, e in enumerate(entries):
        p = e.pronunciation
        if not p:
            continue
        if any(len(p) - len(q) >= 2 and p.startswith(q) for q in prons[e.key]):
            out.add(i)
        elif e.key.isalpha() and len(p) - len(e.key) >= 4 and len(p) >= 1.6 * len(e.key):
            out.add(i)
    return out
