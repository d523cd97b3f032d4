"""Bilingual / multi-way dictionary parsers.

Every supported format is reduced to the same thing: a list of *translation groups*, tuples of
words in which every member translates every other member. A line `house Haus` is the group
`("house", "Haus")`; a multi-way line `bank $ 银行 $ banque` is one group of three. A word that has
several translations simply appears in several groups, so no information is merged away here;
`compile_lexicon` decides how groups become lexicon entries.

Formats (`format=`):

- ``muse``: one pair per line, ``src tgt`` separated by whitespace; a line containing a tab is
  split on the tab instead, so tab-separated entries may contain spaces.
- ``tsv``: tab-separated rows of two or more columns (a row of N words is one group); an optional
  header row whose every field is a known column name (``src``, ``source``, ``tgt``, ``target``,
  ``src_text``, ``tgt_text``, ``word``, ``translation``) is skipped. Every row must have as many
  columns as the first one.
- ``jsonl``: one JSON object per line, either one-to-one ``{"src_text": ..., "tgt_text": ...}`` or
  multi-way ``{"words": "bank $ 银行 $ banque", "index": 1}`` (``words`` may also be a list).
- ``trans``: the Debian ``trans-de-en`` layout ``Deutsch :: English`` with ``|``-aligned senses and
  ``;``-separated synonyms; annotations in ``{} [] () <> //`` are stripped, and only single-word
  synonyms are kept (phrases are counted as dropped).
- ``cedict``: CC-CEDICT lines ``Traditional Simplified [pin1 yin1] /gloss/gloss/``: the Chinese
  word (simplified, and traditional when it differs) paired with each cleaned English gloss
  (``cedict.py``).
- ``dictd``: dictd / FreeDict databases, ``NAME.index`` + ``NAME.dict.dz`` (or ``.dict``); `path`
  may name either file or their common stem. Headword -> translations, without pronunciations,
  part-of-speech and usage notes, numbering, examples and cross-references (``dictd.py``).
- ``auto``: a dictd index, data file or stem -> dictd; ``.jsonl``/``.json`` or a first line
  starting with ``{`` -> jsonl; ``.tsv`` -> tsv; a first data line containing `` :: `` -> trans;
  one in the CC-CEDICT layout -> cedict; otherwise muse. The format chosen is logged
  (``read X as dictd (detected from the file): ...``).

The line formats may be gzip-, bzip2- or xz-compressed (CC-CEDICT ships as ``.txt.gz``); the
file is decompressed as it is read.

A file that is plainly in another format than the one asked for (a dictd ``.index`` or
``.dict.dz`` read as ``tsv``) or not text at all (compressed, binary) is refused before reading,
with a message naming the format it looks like; ``skip_invalid`` does not change that, since the
few lines of such a file that happen to parse (a dictd ``.dict`` has ``word /pronunciation/``
lines that read as MUSE pairs) would make a lexicon of garbage.

In every format, blank lines and lines whose first non-blank character is ``#`` are skipped
(comments), so a word cannot begin a line with ``#``.

Errors name the place: ``path:line: what is wrong``. With ``skip_invalid=True`` such lines are
counted and their messages kept in `DictionaryReadResult.invalid_reports` instead, as long as they
are at most ``max_invalid_fraction`` of the data lines: past that share the file is almost always
in another format than the one it was read as, and reading on would build a lexicon from its few
lines that happen to parse. A file that yields no translation pair is an error too. When the
first data line is already malformed, the error names the format the file does read as, if any.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from megatron_prealign.lexicon import cedict, dictd
from megatron_prealign.log import get_logger

__all__ = [
    "DEFAULT_MAX_INVALID_FRACTION",
    "FORMATS",
    "DictionaryReadResult",
    "LexiconError",
    "detect_format",
    "open_text_lines",
    "read_dictionary",
]

FORMATS = ("auto", "muse", "tsv", "jsonl", "trans", "cedict", "dictd")
# Formats read line by line from one text file; dictd has a reader of its own.
_LINE_FORMATS = ("muse", "tsv", "jsonl", "trans", "cedict")
# Drop reasons only some formats have; `DictionaryReadResult.dropped` lists them for those.
_FORMAT_DROPS = {"dictd": ("fragment", "truncated"), "cedict": cedict.CEDICT_DROPS}
DEFAULT_MAX_INVALID_FRACTION = 0.1
"""Largest share of invalid data lines that ``skip_invalid`` skips before calling the file misread."""

# Field names that mark the first TSV row as a header rather than a word pair.
_TSV_HEADER_NAMES = frozenset(
    {"src", "source", "tgt", "target", "src_text", "tgt_text", "word", "words", "translation"}
)
# Keeping every message of a badly broken million-line file would cost memory for nothing.
_MAX_KEPT_REPORTS = 1000
# Data lines read in each other format to suggest one when a file is mostly invalid.
_PROBE_LINES = 1000

# Leading bytes of compressed files: the first three are read through, the others refused.
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}
_DECOMPRESS = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_SNIFF_BYTES = 8192

logger = get_logger(__name__)

_TRANS_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\([^)]*\)|<[^>]*>|/[^/\s][^/]*/")


class LexiconError(ValueError):
    """A dictionary or lexicon file is malformed, or does not fit the tokenizer in use."""


@dataclass
class DictionaryReadResult:
    """What `read_dictionary` found.

    Attributes:
        path: the file that was read.
        format: the concrete format used (never ``"auto"``).
        groups: translation groups in file order; each is a tuple of >= 2 distinct words, every
            member a translation of every other; the first member is the *source* word.
        num_lines: non-blank, non-comment data lines seen (header excluded).
        dropped_duplicate: groups identical to an earlier group.
        dropped_identity: pairs whose words are equal (``OK OK``), or multi-way groups with
            fewer than two distinct words.
        dropped_invalid: malformed lines skipped because ``skip_invalid=True``.
        dropped_phrase: multi-word translations skipped by the ``trans`` and ``dictd`` readers
            (and dictd entries whose headword is a phrase).
        dropped_fragment: dictd affixes (``archi-``) and elided fragments (``hace...``).
        dropped_truncated: dictd entries whose headword lost its later words (see ``dictd.py``).
        dropped_reference: CC-CEDICT cross-references and classifier lists (``CL:``, ``see``...).
        dropped_pinyin: CC-CEDICT glosses that are only pinyin.
        dropped_not_chinese: CC-CEDICT headwords without a Chinese character (``3C``).
        dropped_by_filter: groups dropped by the quality filters (``quality.filter_dictionary``),
            by filter.
        invalid_reports: ``path:line: message`` for skipped lines (the first 1000).
    """

    path: str
    format: str
    groups: list[tuple[str, ...]] = field(default_factory=list)
    num_lines: int = 0
    dropped_duplicate: int = 0
    dropped_identity: int = 0
    dropped_invalid: int = 0
    dropped_phrase: int = 0
    dropped_fragment: int = 0
    dropped_truncated: int = 0
    dropped_reference: int = 0
    dropped_pinyin: int = 0
    dropped_not_chinese: int = 0
    dropped_by_filter: dict[str, int] = field(default_factory=dict)
    invalid_reports: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """Dropped counts by reason, for summaries (the reasons the format can have)."""
        counts = {
            "duplicate": self.dropped_duplicate,
            "identity": self.dropped_identity,
            "invalid": self.dropped_invalid,
            "phrase": self.dropped_phrase,
        }
        for reason in _FORMAT_DROPS.get(self.format, ()):
            counts[reason] = getattr(self, f"dropped_{reason}")
        counts.update(self.dropped_by_filter)
        return counts

    @property
    def num_sources(self) -> int:
        """Distinct source words (first member of each group)."""
        return len({g[0] for g in self.groups})


class _LineError(Exception):
    """Internal: a malformed line; turned into a LexiconError or a counted report."""


def detect_format(path: str | os.PathLike) -> str:
    """Guess the dictionary format of `path` from its name and first data line."""
    if dictd.is_dictd_path(os.fspath(path)):
        return "dictd"
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED_SUFFIXES:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".tsv":
        return "tsv"
    with _open_binary(os.fspath(p)) as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("{"):
                return "jsonl"
            if " :: " in line:
                return "trans"
            if cedict.looks_like_cedict(line):
                return "cedict"
            return "muse"
    return "muse"


def read_dictionary(
    path: str | os.PathLike,
    format: str = "auto",
    skip_invalid: bool = False,
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION,
) -> DictionaryReadResult:
    """Read a dictionary file into translation groups.

    Args:
        path: the dictionary file.
        format: one of `FORMATS` (see module docstring).
        skip_invalid: count malformed lines instead of raising.
        max_invalid_fraction: with `skip_invalid`, the largest share of data lines (blank and
            comment lines aside) that may be invalid; more is an error.

    Returns:
        A `DictionaryReadResult` with at least one group; duplicate and identity groups are
        dropped and counted.

    Raises:
        LexiconError: on the first malformed line (``path:line: ...``) unless `skip_invalid`;
            more than `max_invalid_fraction` of the lines invalid; no translation pair left;
            an unknown format.
    """
    if format not in FORMATS:
        raise LexiconError(f"unknown dictionary format {format!r}; expected one of {FORMATS}")
    if not 0.0 <= max_invalid_fraction <= 1.0:
        raise LexiconError(f"max_invalid_fraction must be in [0, 1], got {max_invalid_fraction!r}")
    path_str = os.fspath(path)
    fmt = detect_format(path_str) if format == "auto" else format
    _refuse_mismatch(path_str, fmt, format == "auto")
    if fmt == "dictd":
        result = _read_dictd(path_str, skip_invalid)
    else:
        result = _read(path_str, fmt, skip_invalid)
    total = result.num_lines + result.dropped_invalid
    if result.dropped_invalid > max_invalid_fraction * total:
        raise LexiconError(_too_many_invalid(result, format == "auto", max_invalid_fraction))
    if not result.groups:
        raise LexiconError(_no_pairs(result))
    unit = "entries" if fmt == "dictd" else "data lines"
    logger.info("read %s as %s%s: %d translation pairs from %d %s", path_str, fmt,
                " (detected from the file)" if format == "auto" else "", len(result.groups), result.num_lines, unit)
    return result


def _refuse_mismatch(path: str, fmt: str, detected: bool) -> None:
    """Refuse a file that is plainly not `fmt`: a dictd file read as a line format, a file
    compressed in a way not read through, or a binary file; the message names what it is."""
    if fmt == "dictd":
        return
    how = "detected from the file" if detected else "as asked"
    if dictd.is_dictd_path(path):
        raise LexiconError(
            f"{path}: this is a dictd dictionary (.index + .dict.dz), not {fmt} ({how}): pass --format "
            f"dictd (or --format auto) with the .index, the .dict.dz or their common stem"
        )
    try:
        kind, head = _sniff(path)
    except OSError:
        return  # reading will raise the error that names the file
    except (EOFError, zlib.error, lzma.LZMAError) as exc:
        raise LexiconError(f"{path}: a damaged compressed file ({exc})") from None
    if _is_dictd_text(head) or path.endswith(".dict.dz"):
        part = "index" if b"\t" in head.lstrip().split(b"\n", 1)[0] else "data file"
        raise LexiconError(
            f"{path}: this is a dictd dictionary's {part}, "
            f"not {fmt} ({how}): pass --format dictd with the .index and the .dict.dz (or .dict) side by side"
        )
    if kind in ("zip", "zstd"):
        raise LexiconError(
            f"{path}: a {kind} archive, not a {fmt} text dictionary ({how}): unpack it first "
            f"(gzip, bzip2 and xz files are read as they are)"
        )
    # UTF-16 text has NUL bytes too, and is as unreadable here as any binary.
    if b"\x00" in head:
        what = "binary file" if kind is None else f"{kind}-compressed binary file"
        raise LexiconError(
            f"{path}: a {what}, not a {fmt} text dictionary ({how}); a dictionary must be UTF-8 text in one "
            f"of the formats {', '.join(_LINE_FORMATS)}, or a dictd .index + .dict.dz (--format dictd)"
        )


def _sniff(path: str) -> tuple[str | None, bytes]:
    """(compression kind or None, the first bytes of the content, decompressed if it can be)."""
    with open(path, "rb") as f:
        magic = f.read(8)
    kind = next((k for m, k in _MAGIC.items() if magic.startswith(m)), None)
    if kind in _DECOMPRESS:
        with _DECOMPRESS[kind](path, "rb") as f:
            return kind, f.read(_SNIFF_BYTES)
    with open(path, "rb") as f:
        return kind, f.read(_SNIFF_BYTES)


def _is_dictd_text(head: bytes) -> bool:
    """dictd index or data under another name: the ``00-database-*`` meta entries come first."""
    lines = [line.strip() for line in head.split(b"\n")[:5]]
    return any(line.startswith((b"00database", b"00-database")) for line in lines)


def open_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) for the non-blank lines of the UTF-8 text file
    `path`, decompressed on the fly when it is gzip, bzip2 or xz.

    Raises:
        LexiconError: a line that is not UTF-8 (``path:line``), or a binary file.
    """
    path = os.fspath(path)
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LexiconError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at byte offset "
                                   f"{exc.start}); the file must be UTF-8 text") from None
            if lineno == 1:
                text = text.lstrip("\ufeff")
            text = text.rstrip("\r\n")
            if text.strip():
                yield lineno, text


@contextlib.contextmanager
def _open_binary(path: str) -> Iterator[BinaryIO]:
    """`path` opened for reading bytes, decompressed on the fly when it is gzip, bzip2 or xz."""
    with open(path, "rb") as f:
        magic = f.read(8)
    kind = next((k for m, k in _MAGIC.items() if magic.startswith(m)), None)
    opener = _DECOMPRESS.get(kind, open)
    with opener(path, "rb") as f:
        yield f


def _read_dictd(path: str, skip_invalid: bool) -> DictionaryReadResult:
    result = DictionaryReadResult(path=path, format="dictd")
    try:
        pairs, counts = dictd.read_dictd_entries(path, lambda message: _report(result, message, skip_invalid))
    except OSError as exc:
        raise LexiconError(str(exc)) from None
    result.num_lines = counts["entries"]
    result.dropped_phrase = counts["phrase"]
    result.dropped_fragment = counts["fragment"]
    result.dropped_truncated = counts["truncated"]
    seen: set[tuple[str, ...]] = set()
    for headword, translations in pairs:
        _add_groups(result, seen, [(headword, t) for t in translations])
    return result


def _add_groups(result: DictionaryReadResult, seen: set[tuple[str, ...]], groups: list[tuple[str, ...]]) -> None:
    """Append `groups` to `result`, dropping and counting identities and duplicates."""
    for group in groups:
        distinct = tuple(dict.fromkeys(group))
        if len(distinct) < 2:
            result.dropped_identity += 1
        elif distinct in seen:
            result.dropped_duplicate += 1
        else:
            seen.add(distinct)
            result.groups.append(distinct)


def _read(path: str, fmt: str, skip_invalid: bool, max_lines: int | None = None) -> DictionaryReadResult:
    """Parse `path` as `fmt` (the first `max_lines` data lines, if given), without the
    file-level checks of `read_dictionary`."""
    result = DictionaryReadResult(path=path, format=fmt)
    seen: set[tuple[str, ...]] = set()
    parse = {"muse": _parse_muse, "tsv": _TsvParser(), "jsonl": _parse_jsonl, "trans": _parse_trans,
             "cedict": _parse_cedict}[fmt]

    for lineno, text in _numbered_lines(path, result, skip_invalid):
        if max_lines is not None and result.num_lines + result.dropped_invalid >= max_lines:
            break
        try:
            parsed = parse(text)
        except _LineError as exc:
            message = f"{path}:{lineno}: {exc}"
            if not skip_invalid and result.num_lines == 0:
                message += _suggest_format(path, fmt)
            _report(result, message, skip_invalid)
            continue
        if parsed is None:  # header
            continue
        result.num_lines += 1
        groups, drops = parsed
        for reason, count in drops.items():
            setattr(result, f"dropped_{reason}", getattr(result, f"dropped_{reason}") + count)
        _add_groups(result, seen, groups)
    return result


def _suggest_format(path: str, fmt: str) -> str:
    """For an error on the first data line: ``; the file reads as X: pass --format X``, or ''."""
    better = _better_format(path, fmt, DEFAULT_MAX_INVALID_FRACTION)
    if better is None:
        return ""
    return f" (read as {fmt}); the file reads as {better[0]}: pass --format {better[0]}"


def _too_many_invalid(result: DictionaryReadResult, detected: bool, limit: float) -> str:
    total = result.num_lines + result.dropped_invalid
    how = "detected from the file" if detected else "as asked"
    if result.format == "dictd":
        first = result.invalid_reports[0] if result.invalid_reports else "?"
        return (
            f"{result.path}: {result.dropped_invalid} of {total} entries ({result.dropped_invalid / total:.1%}) "
            f"are invalid read as dictd ({how}), more than --max-invalid-fraction {limit:g} allows "
            f"(first: {first}); the index does not belong to this data file or one of them is damaged"
        )
    first = result.invalid_reports[0][len(result.path) + 1 :] if result.invalid_reports else "?"
    message = (
        f"{result.path}: {result.dropped_invalid} of {total} data lines "
        f"({result.dropped_invalid / total:.1%}) are invalid read as {result.format} ({how}), more "
        f"than --max-invalid-fraction {limit:g} allows (first at line {first}); "
    )
    better = _better_format(result.path, result.format, limit)
    if better is not None:
        fmt, invalid, probed = better
        return message + (
            f"the file reads as {fmt} with {invalid} invalid of its first {probed} data lines: "
            f"pass --format {fmt}"
        )
    return message + (
        f"the file is none of the formats {', '.join(_LINE_FORMATS)} (--format); fix its lines or, "
        f"if these lines are really to be skipped, raise --max-invalid-fraction"
    )


def _better_format(path: str, current: str, limit: float) -> tuple[str, int, int] | None:
    """(format, invalid lines, lines read) of the format that reads the start of `path` best,
    if it stays within `limit` and yields pairs; None otherwise."""
    best = None
    for fmt in _LINE_FORMATS:
        if fmt == current:
            continue
        probe = _read(path, fmt, skip_invalid=True, max_lines=_PROBE_LINES)
        probed = probe.num_lines + probe.dropped_invalid
        if not probe.groups or probe.dropped_invalid > limit * probed:
            continue
        if best is None or probe.dropped_invalid / probed < best[1] / best[2]:
            best = (fmt, probe.dropped_invalid, probed)
    return best


def _no_pairs(result: DictionaryReadResult) -> str:
    total = result.num_lines + result.dropped_invalid
    if total == 0:
        if result.format == "dictd":
            return f"{result.path}: no translation pairs: the dictd index has no entries"
        return f"{result.path}: no translation pairs: the file has no data lines (only blank lines and # comments)"
    dropped = ", ".join(f"{k}={v}" for k, v in result.dropped.items())
    unit = "entries" if result.format == "dictd" else "data lines"
    return (
        f"{result.path}: no translation pairs in {total} {unit} read as {result.format} "
        f"(dropped: {dropped})"
    )


def _numbered_lines(
    path: str, result: DictionaryReadResult, skip_invalid: bool
) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line) for data lines, neither blank nor comments;
    bad UTF-8 is reported."""
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _report(
                    result,
                    f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                    f"offset {exc.start})",
                    skip_invalid,
                )
                continue
            if lineno == 1:
                text = text.lstrip("\ufeff")
            text = text.rstrip("\r\n")
            stripped = text.strip()
            if stripped and not stripped.startswith("#"):
                yield lineno, text


def _report(result: DictionaryReadResult, message: str, skip_invalid: bool) -> None:
    if not skip_invalid:
        raise LexiconError(message)
    result.dropped_invalid += 1
    if len(result.invalid_reports) < _MAX_KEPT_REPORTS:
        result.invalid_reports.append(message)


def _check_words(words: list[str]) -> tuple[str, ...]:
    stripped = tuple(w.strip() for w in words)
    for i, w in enumerate(stripped):
        if not w:
            raise _LineError(f"empty word in column {i + 1}")
        try:
            w.encode("utf-8")
        except UnicodeEncodeError as exc:
            # Only JSON escapes (``"\ud800"``) get here; no tokenizer can encode such a word.
            raise _LineError(
                f"word in column {i + 1} has a lone surrogate U+{ord(w[exc.start]):04X}"
            ) from None
    return stripped


def _parse_muse(text: str) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    fields = text.split("\t") if "\t" in text else text.split()
    if len(fields) != 2:
        raise _LineError(f"expected 2 columns (source, target), got {len(fields)}")
    return [_check_words(fields)], {}


class _TsvParser:
    """Stateful: the first row fixes the column count and may be a header."""

    def __init__(self) -> None:
        self.num_columns: int | None = None

    def __call__(self, text: str) -> tuple[list[tuple[str, ...]], dict[str, int]] | None:
        fields = text.split("\t")
        if self.num_columns is None:
            if len(fields) < 2:
                raise _LineError(f"expected at least 2 tab-separated columns, got {len(fields)}")
            self.num_columns = len(fields)
            if all(f.strip().lower() in _TSV_HEADER_NAMES for f in fields):
                return None
        if len(fields) != self.num_columns:
            raise _LineError(
                f"expected {self.num_columns} tab-separated columns (as in the first row), "
                f"got {len(fields)}"
            )
        return [_check_words(fields)], {}


def _parse_jsonl(text: str) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _LineError(f"bad JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise _LineError("bad JSON: nested too deeply") from None
    except ValueError as exc:  # an integer beyond Python's digit limit; its advice is not for us
        raise _LineError(f"bad JSON: {str(exc).split(':')[0]}") from None
    if not isinstance(record, dict):
        raise _LineError(f"expected a JSON object, got {type(record).__name__}")
    if "words" in record:
        words = record["words"]
        if isinstance(words, str):
            members = words.split("$")
        elif isinstance(words, list) and all(isinstance(w, str) for w in words):
            members = list(words)
        else:
            raise _LineError('"words" must be a string like "a $ b $ c" or a list of strings')
        if len(members) < 2:
            raise _LineError(f'"words" needs at least 2 members separated by "$", got {len(members)}')
        return [_check_words(members)], {}
    if "src_text" in record or "tgt_text" in record:
        src, tgt = record.get("src_text"), record.get("tgt_text")
        for key, value in (("src_text", src), ("tgt_text", tgt)):
            if not isinstance(value, str):
                raise _LineError(f'"{key}" must be a string, got {type(value).__name__}')
        return [_check_words([src, tgt])], {}
    raise _LineError('expected keys "src_text" and "tgt_text", or "words"')


def _parse_trans(text: str) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    sides = text.split(" :: ")
    if len(sides) != 2:
        raise _LineError(f'expected one " :: " separating the two languages, got {len(sides) - 1}')
    left, right = (side.split(" | ") for side in sides)
    # Senses are aligned by position; when a line's sides disagree only the first sense is safe.
    if len(left) != len(right):
        left, right = left[:1], right[:1]
    groups: list[tuple[str, ...]] = []
    phrases = 0
    for lsense, rsense in zip(left, right):
        lwords, lphr = _trans_synonyms(lsense)
        rwords, rphr = _trans_synonyms(rsense)
        phrases += lphr + rphr
        groups.extend((lw, rw) for lw in lwords for rw in rwords)
    return groups, {"phrase": phrases}


def _parse_cedict(text: str) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    try:
        pairs, drops = cedict.parse_cedict_line(text)
    except ValueError as exc:
        raise _LineError(str(exc)) from None
    return [_check_words(list(pair)) for pair in pairs], drops


def _trans_synonyms(sense: str) -> tuple[list[str], int]:
    words, phrases = [], 0
    for syn in sense.split(";"):
        syn = " ".join(_TRANS_ANNOTATION.sub(" ", syn).split())
        if not syn:
            continue
        if " " in syn:
            phrases += 1
        else:
            words.append(syn)
    return words, phrases
