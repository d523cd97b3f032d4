"""The English–Spanish Bible setting: a real language pair through the ordinary pipeline.

    python -m prealign_experiments.bible_pair.setting --output-dir runs/bible/setting [--spanish-share 0.1 ...]

Everything is read at run time from installed Debian packages (nothing GPL or CC is shipped):
the King James Version (`sword-text-kjv`, module engKJV2006eb), the Reina-Valera 1909
(`sword-text-sparv`, spaRV1909eb) and the FreeDict English–Spanish dictionary
(`dict-freedict-eng-spa`, dictd format). Both Bibles use the KJV versification, so verse ``k`` of
one is verse ``k`` of the other (`sword.py`).

```
KJV + RV1909 (31,102 parallel verses, 1,189 chapters)
  |  documents = chapters; every `eval_every`-th chapter held out in BOTH languages
  |  training chapters -> English | Spanish (`spanish_share` of chapters, disjoint text)
  |  held-out chapters -> en_eval / es_eval (perplexity), verse pairs -> parallel.jsonl (retrieval)
  v
tokenizer/bible.model            SentencePiece unigram on the training text of both languages
dictionary/train.tsv             FreeDict pairs (read by the library's dictd reader), minus held-out words
dictionary/heldout.tsv           pairs of held-out English words found in the text (never switched, never pre-aligned)
text/{en,es}_{train,eval}.jsonl
retrieval/parallel.jsonl         {"src": English verse, "tgt": Spanish verse}, held-out chapters only
```

`build_setting(cfg)` then compiles both dictionaries with `build_lexicon`, tokenizes every text
with `preprocess` (code-switch sidecar of the training dictionary) and writes ``manifest.json``
with the counts the report quotes. `existing_setting(cfg)` finds a finished setting built with
the same options.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path
from megatron_prealign.log import get_logger
from prealign_experiments.bible_pair.sword import SWORD_ROOT, Verse, read_ztext

__all__ = ["BiblePairConfig", "BibleSetting", "DEFAULT_DICTIONARY", "MANIFEST", "TEXT_SETS", "build_setting",
           "build_sources", "existing_setting", "load_setting", "main", "parse_args", "split_dictionary"]

logger = get_logger(__name__)

DEFAULT_DICTIONARY = "/usr/share/dictd/freedict-eng-spa.index"
"""Where Debian's dict-freedict-eng-spa installs the dictionary (its .dict.dz lies beside it)."""
MANIFEST = "manifest.json"
TOKENIZER_TYPE = "SentencePieceTokenizer"
TEXT_SETS = ("en_train", "es_train", "en_eval", "es_eval")
# Words as the lexicon scan sees them: letters (accented included) after whitespace or punctuation.
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, kw_only=True)
class BiblePairConfig:
    """How the English–Spanish setting is cut (the flags of
    `python -m prealign_experiments.bible_pair.setting`)."""

    output_dir: str
    """Directory the setting is written to (--output-dir)."""
    sword_root: str = SWORD_ROOT
    """SWORD library root holding mods.d/ and modules/ (--sword-root)."""
    english_module: str = "engKJV2006eb"
    """English zText module, KJV versification (Debian sword-text-kjv) (--english-module)."""
    spanish_module: str = "spaRV1909eb"
    """Spanish zText module, KJV versification (Debian sword-text-sparv) (--spanish-module)."""
    dictionary: str = DEFAULT_DICTIONARY
    """English->Spanish dictionary (Debian dict-freedict-eng-spa) (--dictionary)."""
    dictionary_format: str = "dictd"
    """Format of --dictionary as the library's read_dictionary names it (--dictionary-format)."""
    vocab_size: int = 8000
    """SentencePiece vocabulary of the shared tokenizer (--vocab-size)."""
    spanish_share: float = 0.1
    """Share of training chapters given in Spanish instead of English (--spanish-share)."""
    eval_every: int = 20
    """Every N-th chapter (offset N/2) is held out of training in both languages: perplexity and
    retrieval are measured on these (--eval-every)."""
    retrieval_pairs: int = 1000
    """Parallel verse pairs (from held-out chapters) written for retrieval (--retrieval-pairs)."""
    heldout_share: float = 0.1
    """Share of the dictionary's English words found in the training text that are held out:
    never code-switched, never pre-aligned; the held-out alignment gap is measured on them
    (--heldout-share)."""
    min_word_count: int = 5
    """A held-out English word occurs at least this often in the English training text and one
    of its translations at least once in the Spanish (--min-word-count)."""
    case_variants: bool = True
    """Also match Capitalized dictionary words (sentence starts) (--case-variants)."""
    stopwords_top_k: int = 20
    """Lexicon quality filter of the training dictionary: drop the N most matched words of each
    language in the training text (`the`, `y`, ...); 0 turns it off (--stopwords-top-k)."""
    min_frequency: int = 1
    """Lexicon quality filter: drop words matched fewer times in the training text; 0 turns it
    off (--min-frequency)."""
    max_translations: int = 3
    """Lexicon quality filter: keep each word's K most matched translations; 0 keeps all
    (--max-translations)."""
    seed: int = 1234
    """Seed of every random choice in the setting (--seed)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 32:
            raise ValueError("--vocab-size must be >= 32")
        if not 0.0 < self.spanish_share < 1.0:
            raise ValueError("--spanish-share must be in (0, 1)")
        if self.eval_every < 2:
            raise ValueError("--eval-every must be >= 2")
        if self.retrieval_pairs < 2:
            raise ValueError("--retrieval-pairs must be >= 2")
        if not 0.0 < self.heldout_share < 0.5:
            raise ValueError("--heldout-share must be in (0, 0.5)")
        if self.min_word_count < 1:
            raise ValueError("--min-word-count must be >= 1")
        if min(self.stopwords_top_k, self.min_frequency, self.max_translations) < 0:
            raise ValueError("--stopwords-top-k, --min-frequency and --max-translations must be >= 0")


@dataclass
class BibleSetting:
    """Paths and facts of a built setting (``manifest.json``); paths are relative to `root`."""

    root: str
    config: dict[str, Any]
    tokenizer_model: str = "tokenizer/bible.model"
    dictionary_tsv: str = "dictionary/train.tsv"
    heldout_tsv: str = "dictionary/heldout.tsv"
    lexicon: str = "dictionary/train.lex"
    heldout_lexicon: str = "dictionary/heldout.lex"
    quality_report: str = "dictionary/quality.json"
    parallel: str = "retrieval/parallel.jsonl"
    texts: dict[str, str] = field(default_factory=lambda: {name: f"text/{name}.jsonl" for name in TEXT_SETS})
    prefixes: dict[str, str] = field(default_factory=lambda: {name: f"data/{name}_text_document" for name in TEXT_SETS})
    stats: dict[str, Any] = field(default_factory=dict)

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def prefix(self, name: str) -> str:
        """Absolute `--data-path` prefix of text set `name`."""
        return self.path(self.prefixes[name])

    def save(self) -> None:
        data = asdict(self)
        data.pop("root")
        with atomic_path(self.path(MANIFEST)) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def load_setting(root: str | os.PathLike) -> BibleSetting:
    """Read ``<root>/manifest.json`` written by `build_setting`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the setting with "
                                f"`python -m prealign_experiments.bible_pair.setting --output-dir {root}`")
    return BibleSetting(root=os.fspath(root), **json.loads(path.read_text()))


# ------------------------------------------------------------------------------------------
# sources


def chapters(verses: Sequence[Verse]) -> list[tuple[str, list[int]]]:
    """(``Book.chapter``, indices of its verses) in canonical order."""
    out: list[tuple[str, list[int]]] = []
    for i, verse in enumerate(verses):
        key = f"{verse.book}.{verse.chapter}"
        if not out or out[-1][0] != key:
            out.append((key, []))
        out[-1][1].append(i)
    return out


def word_counts(texts: Iterable[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(_WORD.findall(text))
    return counts


def split_dictionary(groups: Sequence[tuple[str, ...]], english: collections.Counter, spanish: collections.Counter,
                     *, heldout_share: float, min_count: int, seed: int
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, int]]:
    """(training pairs, held-out pairs, counts) from the dictionary's groups (first member
    English, the others its Spanish translations).

    Held-out English words are a seeded `heldout_share` of the English words that occur at
    least `min_count` times in `english` and have a translation found in `spanish`; their pairs
    whose Spanish word occurs in the text are the held-out pairs. The training pairs are every
    pair that touches neither a held-out English word nor any translation of one, so no
    held-out word (in either language) is switched or pre-aligned.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for group in groups:
        source = group[0]
        for target in group[1:]:
            if (source, target) not in seen and source != target:
                seen.add((source, target))
                pairs.append((source, target))
    by_english: dict[str, list[str]] = collections.defaultdict(list)
    for en, es in pairs:
        by_english[en].append(es)
    attested = sorted(w for w, ts in by_english.items()
                      if english[w] >= min_count and any(spanish[t] for t in ts))
    rng = np.random.default_rng([seed, 0xB1B])
    num_heldout = max(1, int(round(heldout_share * len(attested)))) if attested else 0
    heldout_words = {attested[i] for i in rng.choice(len(attested), size=num_heldout, replace=False)}
    heldout_spanish = {t for w in heldout_words for t in by_english[w]}
    heldout = [(en, es) for en, es in pairs if en in heldout_words and spanish[es]]
    train = [(en, es) for en, es in pairs if en not in heldout_words and es not in heldout_spanish]
    counts = {"dictionary_pairs": len(pairs), "dictionary_english_words": len(by_english),
              "attested_english_words": len(attested), "heldout_english_words": len(heldout_words),
              "heldout_pairs": len(heldout), "train_pairs": len(train),
              "train_pairs_in_text": sum(1 for en, es in train if english[en] and spanish[es])}
    return train, heldout, counts


def _write_jsonl(path: str, rows: Iterable[dict[str, str]]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def _write_tsv(path: str, pairs: Iterable[tuple[str, str]]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for en, es in pairs:
                f.write(f"{en}\t{es}\n")
                n += 1
    return n


def build_sources(cfg: BiblePairConfig) -> BibleSetting:
    """Read both Bibles and the dictionary; write the tokenizer, texts, dictionaries and the
    parallel verse set (see module docstring)."""
    from megatron_prealign.lexicon import read_dictionary
    from prealign_experiments.english_clone.clone import split_sentences, train_english_tokenizer

    setting = BibleSetting(root=cfg.output_dir, config=asdict(cfg))
    rng = np.random.default_rng(cfg.seed)
    english = read_ztext(cfg.english_module, cfg.sword_root)
    spanish = read_ztext(cfg.spanish_module, cfg.sword_root)
    units = chapters(english)
    offset = cfg.eval_every // 2
    held = [i for i in range(len(units)) if i % cfg.eval_every == offset]
    train = [i for i in range(len(units)) if i % cfg.eval_every != offset]
    in_spanish = rng.random(len(train)) < cfg.spanish_share

    def text(verses: Sequence[Verse], indices: Sequence[int]) -> str:
        return " ".join(verses[i].text for i in indices if verses[i].text)

    docs = {
        "en_train": [text(english, units[c][1]) for c, es in zip(train, in_spanish) if not es],
        "es_train": [text(spanish, units[c][1]) for c, es in zip(train, in_spanish) if es],
        "en_eval": [text(english, units[c][1]) for c in held],
        "es_eval": [text(spanish, units[c][1]) for c in held],
    }
    logger.info("chapters: %d training (%d Spanish), %d held out in both languages",
                len(train), int(in_spanish.sum()), len(held))

    # Parallel verses of the held-out chapters: neither side was trained on.
    candidates = [i for c in held for i in units[c][1] if english[i].text and spanish[i].text]
    pick = np.sort(rng.choice(len(candidates), size=min(cfg.retrieval_pairs, len(candidates)), replace=False))
    parallel = [{"src": english[candidates[k]].text, "tgt": spanish[candidates[k]].text,
                 "ref": english[candidates[k]].ref} for k in pick]

    sentences = [s for name in ("en_train", "es_train") for d in docs[name] for s in split_sentences(d)]
    with atomic_path(setting.path(setting.tokenizer_model)) as tmp:
        tmp.write_bytes(train_english_tokenizer(sentences, cfg.vocab_size))

    result = read_dictionary(cfg.dictionary, format=cfg.dictionary_format)
    en_counts, es_counts = word_counts(docs["en_train"]), word_counts(docs["es_train"])
    train_pairs, heldout_pairs, dict_counts = split_dictionary(
        result.groups, en_counts, es_counts, heldout_share=cfg.heldout_share, min_count=cfg.min_word_count,
        seed=cfg.seed)
    _write_tsv(setting.path(setting.dictionary_tsv), train_pairs)
    _write_tsv(setting.path(setting.heldout_tsv), heldout_pairs)
    documents = {name: _write_jsonl(setting.path(setting.texts[name]), ({"text": d} for d in texts))
                 for name, texts in docs.items()}
    _write_jsonl(setting.path(setting.parallel), parallel)
    setting.stats = {
        "chapters": {"train": len(train), "train_spanish": int(in_spanish.sum()), "heldout": len(held)},
        "documents": documents,
        "words": {name: sum(len(d.split()) for d in texts) for name, texts in docs.items()},
        "retrieval_pairs": len(parallel),
        "dictionary": {"path": cfg.dictionary, "format": result.format, "groups_read": len(result.groups),
                       "dropped": result.dropped, **dict_counts},
    }
    setting.save()
    return setting


def finalize(setting: BibleSetting) -> BibleSetting:
    """Record token counts and lexicon facts in ``manifest.json``."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    tokenizer = build_tokenizer(TOKENIZER_TYPE, setting.path(setting.tokenizer_model))
    lexicon = load_lexicon(setting.path(setting.lexicon), tokenizer)
    heldout = load_lexicon(setting.path(setting.heldout_lexicon), tokenizer)
    tokens = {}
    for name in TEXT_SETS:
        dataset = IndexedDataset(setting.prefix(name))
        tokens[name] = int(dataset.sequence_lengths.sum(dtype=np.int64))
    setting.stats["tokens"] = tokens
    setting.stats["spanish_token_share"] = tokens["es_train"] / (tokens["en_train"] + tokens["es_train"])
    setting.stats["lexicon"] = {"entries": lexicon.num_entries, "summary": lexicon.summary(),
                                "heldout_entries": heldout.num_entries,
                                "mean_word_tokens": float(np.diff(lexicon.entry_offsets).mean())}
    setting.stats["lexicon_sha256"] = lexicon.sha256
    setting.stats["tokenizer_fingerprint"] = tokenizer.fingerprint
    setting.save()
    logger.info("setting ready: tokens %s", tokens)
    return setting


def existing_setting(cfg: BiblePairConfig) -> Optional[BibleSetting]:
    """The finished setting in ``cfg.output_dir`` if it was built with exactly these options."""
    if not (Path(cfg.output_dir) / MANIFEST).is_file():
        return None
    setting = load_setting(cfg.output_dir)
    return setting if setting.config == asdict(cfg) and "tokens" in setting.stats else None


def build_setting(cfg: BiblePairConfig, *, workers: int = 1) -> BibleSetting:
    """`build_sources` -> both lexicons (`build_lexicon`) -> every text set (`preprocess`) -> `finalize`."""
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
    from megatron_prealign.lexicon import BuildLexiconConfig, build_lexicon, build_lexicon_and_report

    start = time.perf_counter()
    setting = build_sources(cfg)
    model = setting.path(setting.tokenizer_model)
    filters = {"stopwords_top_k": cfg.stopwords_top_k, "min_frequency": cfg.min_frequency,
               "max_translations": cfg.max_translations}
    corpus = tuple(setting.path(setting.texts[name]) for name in ("en_train", "es_train"))
    _, report = build_lexicon_and_report(BuildLexiconConfig(
        dictionary=setting.path(setting.dictionary_tsv), format="tsv", tokenizer_type=TOKENIZER_TYPE,
        tokenizer_model=model, output=setting.path(setting.lexicon), case_variants=cfg.case_variants,
        corpus=corpus, report=setting.path(setting.quality_report), **filters))
    build_lexicon(BuildLexiconConfig(dictionary=setting.path(setting.heldout_tsv), format="tsv",
                                     tokenizer_type=TOKENIZER_TYPE, tokenizer_model=model,
                                     output=setting.path(setting.heldout_lexicon)))
    setting.stats["quality"] = {"filters": filters, "corpus": report.get("corpus"), "groups": {
        k: v for k, v in (report.get("groups") or {}).items() if k in ("count", "largest", "histogram")},
        "filter_counts": report.get("filters"), "top_entries": (report.get("top_entries") or [])[:10]}
    for name in TEXT_SETS:
        preprocess(PreprocessConfig(input=setting.path(setting.texts[name]),
                                    output_prefix=setting.prefix(name)[: -len("_text_document")],
                                    tokenizer_type=TOKENIZER_TYPE, tokenizer_model=model, append_eod=True,
                                    lexicon=setting.path(setting.lexicon), workers=workers))
    setting = finalize(setting)
    logger.info("English-Spanish setting built in %s (%.0f s)", cfg.output_dir, time.perf_counter() - start)
    return setting


def build_parser() -> argparse.ArgumentParser:
    from prealign_experiments.english_clone.setting import field_docs

    parser = argparse.ArgumentParser(prog="python -m prealign_experiments.bible_pair.setting",
                                     description="Build the English-Spanish Bible setting from Debian packages.")
    docs = field_docs(BiblePairConfig)
    parser.add_argument("--output-dir", required=True, help=docs["output_dir"])
    for f in dataclasses.fields(BiblePairConfig):
        if f.name == "output_dir":
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"{docs.get(f.name, '')} Default: %(default)s")
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default,
                                help=f"{docs.get(f.name, '')} Default: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="preprocessing processes")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching setting exists")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[BiblePairConfig, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = BiblePairConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BiblePairConfig)})
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    return cfg, args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build (or reuse) the setting and print its statistics as JSON."""
    from megatron_prealign.lexicon import LexiconError
    from prealign_experiments.bible_pair.sword import ZTextError

    cfg, args = parse_args(argv)
    if not args.force and existing_setting(cfg) is not None:
        logger.info("reusing the setting in %s (same options; --force rebuilds it)", cfg.output_dir)
        return 0
    try:
        setting = build_setting(cfg, workers=args.workers)
    except (LexiconError, ZTextError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(json.dumps(setting.stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
