"""Export installed manual pages as plain-text JSONL corpora: Chinese (Debian `manpages-zh`) and English.

    python examples/en_zh/manpages.py --out data/manpages [--max-chars 2000] [--limit 0]

Writes `<out>/zh.jsonl` (the pages under /usr/share/man/zh_CN) and `<out>/en.jsonl` (the English
pages of the same names, where installed), one `{"text": ...}` document per paragraph group of at
most `--max-chars` characters. The Chinese pages are translations of the English ones, so the two
files are comparable text, not a parallel corpus (versions and sections differ).

Only what a corpus needs is kept from roff: macro lines become paragraph breaks or their text
arguments, inline font and size escapes are removed, named characters become their text. It is
no general roff renderer; tables and equations come out as their cell text.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

MAN_ROOT = Path("/usr/share/man")
ZH_DIR = "zh_CN"
PACKAGE = "manpages-zh"

# Macros whose arguments are running text (headings, font changes); every other macro is layout.
_TEXT_MACROS = {"SH", "SS", "B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB", "IP", "TP", "UR", "MT"}
_NAMED = {"em": "—", "en": "–", "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "aq": "'", "dq": '"',
          "bu": "•", "co": "©", "rg": "®", "mi": "-", "hy": "-", "ti": "~", "ha": "^", "rs": "\\",
          "sl": "/", "pl": "+", "eq": "=", "<=": "≤", ">=": "≥", "mu": "×", "de": "°"}
_ESCAPE = re.compile(r"""\\(?:f(?:\[[^\]]*\]|\(..|.)        # font
                         |s[+-]?(?:\d|\(\d\d|\[\d+\])      # size
                         |\*(?:\[[^\]]*\]|\(..|.)           # string register
                         |\((..)                            # named character, two letters
                         |\[([^\]]*)\]                      # named character, bracketed
                         |([-ce .&,/:%|^~'`]))              # one-character escapes
                   """, re.VERBOSE)
_ONE_CHAR = {"-": "-", "e": "\\", " ": " ", ".": ".", "'": "'", "`": "`", "~": " "}


def _unescape(match: re.Match) -> str:
    named = match.group(1) or match.group(2)
    if named is not None:
        return _NAMED.get(named, "")
    one = match.group(3)
    return _ONE_CHAR.get(one, "") if one is not None else ""


def _macro_args(rest: str) -> str:
    # Quoted arguments keep their spaces; font-alternating macros join their arguments.
    args = re.findall(r'"([^"]*)"|(\S+)', rest)
    return " ".join(a or b for a, b in args)


def roff_paragraphs(source: str) -> list[str]:
    """The text of a roff page as paragraphs (each one line of running text)."""
    paragraphs: list[str] = []
    current: list[str] = []
    in_definition = False  # .de/.am/.ig bodies are macro code or comments, up to a ".." line

    def flush() -> None:
        text = re.sub(r"\s+", " ", " ".join(current)).strip()
        if text:
            paragraphs.append(text)
        current.clear()

    for line in source.splitlines():
        if in_definition:
            in_definition = line.strip() != ".."
            continue
        if re.match(r"[.'](de|de1|am|ig)\b", line):
            in_definition = True
            continue
        if line.startswith(('.\\"', "'\\\"", '.\\#', "'\\#")) or line in (".", "'"):
            continue
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            flush()
            if name in _TEXT_MACROS and rest.strip():
                current.append(_ESCAPE.sub(_unescape, _macro_args(rest)))
                if name in ("SH", "SS"):
                    flush()
            continue
        current.append(_ESCAPE.sub(_unescape, line).replace("\\", ""))
    flush()
    return paragraphs


def documents(paragraphs: Sequence[str], max_chars: int) -> Iterator[str]:
    """Consecutive paragraphs grouped into documents of at most `max_chars` characters (a longer
    paragraph is cut at `max_chars`)."""
    group: list[str] = []
    size = 0
    for para in paragraphs:
        for start in range(0, len(para), max_chars):
            piece = para[start:start + max_chars]
            if group and size + 1 + len(piece) > max_chars:
                yield "\n".join(group)
                group, size = [], 0
            group.append(piece)
            size += len(piece) + (1 if size else 0)
    if group:
        yield "\n".join(group)


def _read(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def page_pairs(root: Path = MAN_ROOT) -> Iterator[tuple[Path, Optional[Path]]]:
    """(Chinese page, English page of the same section and name or None), in a stable order."""
    zh_root = root / ZH_DIR
    for zh in sorted(zh_root.glob("man*/*")):
        en = root / zh.parent.name / zh.name
        yield zh, (en if en.is_file() else None)


def export(out: str | os.PathLike, *, root: Path = MAN_ROOT, max_chars: int = 2000, limit: int = 0) -> dict:
    """Write `<out>/zh.jsonl` and `<out>/en.jsonl`; returns the counts."""
    if not (root / ZH_DIR).is_dir():
        raise FileNotFoundError(f"{root / ZH_DIR}: no Chinese manual pages; install the Debian package {PACKAGE} "
                                f"(apt-get install {PACKAGE})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"pages_zh": 0, "pages_en": 0, "docs_zh": 0, "docs_en": 0, "chars_zh": 0, "chars_en": 0}
    tmp = {lang: out / f".{lang}.jsonl.tmp.{os.getpid()}" for lang in ("zh", "en")}
    try:
        with open(tmp["zh"], "w", encoding="utf-8") as zh_f, open(tmp["en"], "w", encoding="utf-8") as en_f:
            for zh_path, en_path in page_pairs(root):
                if limit and counts["pages_zh"] >= limit:
                    break
                for lang, path, f in (("zh", zh_path, zh_f), ("en", en_path, en_f)):
                    if path is None:
                        continue
                    counts[f"pages_{lang}"] += 1
                    for doc in documents(roff_paragraphs(_read(path)), max_chars):
                        f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                        counts[f"docs_{lang}"] += 1
                        counts[f"chars_{lang}"] += len(doc)
        for lang, path in tmp.items():
            os.replace(path, out / f"{lang}.jsonl")
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for zh.jsonl and en.jsonl")
    parser.add_argument("--max-chars", type=int, default=2000, help="characters per document at most")
    parser.add_argument("--limit", type=int, default=0, help="Chinese pages to read at most (0: all)")
    parser.add_argument("--man-root", default=str(MAN_ROOT), help="manual page root")
    args = parser.parse_args(argv)
    if args.max_chars < 1 or args.limit < 0:
        parser.error("--max-chars must be >= 1 and --limit >= 0")
    try:
        counts = export(args.out, root=Path(args.man_root), max_chars=args.max_chars, limit=args.limit)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
