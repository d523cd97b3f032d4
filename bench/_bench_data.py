"""Inputs of the data-throughput benchmarks, built offline from text installed on the machine and
cached in a work directory (a second run reuses them):

* ``corpus.jsonl``: English documents of at most 2,000 characters (``{"text": ...}`` lines) from
  the text files under /usr/share/doc (READMEs, NEWS, changelogs, copyright files, ``.txt``,
  ``.md``, ``.rst``; gzip-compressed or not), paragraphs packed in file order up to a target size.
* ``sp.model``: a SentencePiece unigram model (vocab 32,000, byte fallback) trained on the
  first part of that corpus.
* ``dense.muse``: the 20,000 most frequent corpus words, each paired with a made-up twin
  (word + "ö"), a dense dictionary: most running words are entries.
"""
from __future__ import annotations

import collections
import gzip
import json
import os
import re
from pathlib import Path
from typing import Iterator

DOC_ROOT = Path("/usr/share/doc")
_TEXT_NAME = re.compile(r"(README|NEWS|changelog|copyright|CHANGES|AUTHORS|THANKS|TODO|\.txt|\.md|\.rst)",
                        re.IGNORECASE)
MAX_DOC_CHARS = 2000


def _text_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _TEXT_NAME.search(name) and path.is_file() and not path.is_symlink():
                yield path


def _read(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError):
        return ""
    if b"\0" in raw[:4096]:
        return ""  # binary
    return raw.decode("utf-8", errors="replace")


def _documents(text: str) -> Iterator[str]:
    """Paragraphs packed into documents of at most MAX_DOC_CHARS (longer paragraphs cut at spaces)."""
    doc = ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        while len(para) > MAX_DOC_CHARS:
            cut = para.rfind(" ", 0, MAX_DOC_CHARS)
            cut = cut if cut > 0 else MAX_DOC_CHARS
            if doc:
                yield doc
                doc = ""
            yield para[:cut]
            para = para[cut:].lstrip()
        if not para:
            continue
        if doc and len(doc) + 2 + len(para) > MAX_DOC_CHARS:
            yield doc
            doc = ""
        doc = f"{doc}\n\n{para}" if doc else para
    if doc:
        yield doc


def build_corpus(path: Path, target_bytes: int) -> Path:
    if path.exists() and path.stat().st_size >= target_bytes:
        return path
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as out:
        for f in _text_files(DOC_ROOT):
            for doc in _documents(_read(f)):
                line = json.dumps({"text": doc}, ensure_ascii=False) + "\n"
                out.write(line)
                written += len(line.encode("utf-8"))
            if written >= target_bytes:
                break
    if written < target_bytes:
        raise SystemExit(f"only {written / 1e6:.1f} MB of text under {DOC_ROOT}; lower --corpus-mb")
    os.replace(tmp, path)
    return path


def corpus_texts(path: Path, limit_bytes: int | None = None) -> list[str]:
    texts, seen = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            seen += len(line)
            if limit_bytes is not None and seen >= limit_bytes:
                break
    return texts


def train_sentencepiece(corpus: Path, model: Path, vocab_size: int = 32000, sample_mb: int = 12) -> Path:
    if model.exists():
        return model
    import sentencepiece as spm

    text = model.with_suffix(".train.txt")
    # One sentence per line: SentencePiece skips lines longer than max_sentence_length.
    sentences = (s for t in corpus_texts(corpus, sample_mb << 20) for s in re.split(r"(?<=[.!?])\s+|\n", t)
                 if s.strip())
    text.write_text("\n".join(sentences), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(model.with_suffix("")), vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.9995, byte_fallback=True, num_threads=2, input_sentence_size=400_000,
        shuffle_input_sentence=True, minloglevel=2,
    )
    text.unlink()
    return model


def dense_dictionary(corpus: Path, path: Path, num_words: int = 20000) -> Path:
    if path.exists():
        return path
    counts = collections.Counter(w for t in corpus_texts(corpus, 16 << 20) for w in re.findall(r"[A-Za-z]+", t))
    path.write_text("".join(f"{w} {w}ö\n" for w, _ in counts.most_common(num_words)), encoding="utf-8")
    return path


def prepare(workdir: Path, corpus_mb: float) -> tuple[Path, Path, Path]:
    """(corpus.jsonl, sp.model, dense.muse) under `workdir`, built on first use."""
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(workdir / "corpus.jsonl", int(corpus_mb * 1e6))
    model = train_sentencepiece(corpus, workdir / "sp.model")
    return corpus, model, dense_dictionary(corpus, workdir / "dense.muse")
