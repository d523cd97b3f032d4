"""The English-Clone setting (docs/DESIGN.md §5): the source files of the controlled experiment,
and the whole build.

    python -m prealign_experiments.english_clone.setting --output-dir runs/demo/setting \
        [--corpus FILE.jsonl.gz] [--vocab-size 4000] [--clone-share 0.1] [--dictionary-size 1700] ...

`build_sources(cfg)` turns an English corpus (by default the State of the Union addresses shipped
in ``data/``, `DEFAULT_CORPUS`) into everything the normal pipeline consumes:

```
corpus (.jsonl[.gz], one {"text": ...} per document)
  |  documents -> eval documents (every `eval_every`-th) | training chunks (~`chunk_chars`)
  |  training chunks -> English share | clone share (`clone_share`, disjoint text)
  v
tokenizer/english.model          SentencePiece unigram, V pieces (identity normalization)
tokenizer/english_clone.model    2V pieces: English ids 0..V-1, clone twins V..2V-1 (clone.py)
dictionary/clone_dict.tsv        frequent word <TAB> clone word  (the training dictionary)
dictionary/heldout.tsv           frequent words kept out of the dictionary (generalization check)
text/{en,clone}_{train,eval}.jsonl   clone text is written in the clone script
text/knowledge_en.jsonl          facts about invented entities, English only  (knowledge.py)
text/transfer_en.jsonl           a skill shown only in English                (transfer.py)
knowledge/facts.json, transfer/probe.json   the evaluation sets
```

`build_setting(cfg)` then compiles both dictionaries with the library's `build_lexicon`,
tokenizes every text with its `preprocess` (with the code-switch sidecar of the training
dictionary), and calls `finalize` to check the result and write ``manifest.json`` (what the
trainer, the evaluator and the demo read). `existing_setting(cfg)` finds a finished setting built
with the same options, which the command line and the demo reuse.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from prealign_experiments.english_clone.clone import (
    build_clone_model,
    split_sentences,
    to_clone_text,
    train_english_tokenizer,
    verify_clone_model,
)
from megatron_prealign.fileio import atomic_path
from megatron_prealign.log import get_logger

if TYPE_CHECKING:
    from megatron_prealign.data.preprocess import PreprocessConfig
    from megatron_prealign.lexicon import BuildLexiconConfig

__all__ = [
    "DEFAULT_CORPUS",
    "MANIFEST",
    "CloneSetting",
    "CloneSettingConfig",
    "build_setting",
    "build_sources",
    "existing_setting",
    "field_docs",
    "finalize",
    "load_setting",
    "main",
    "parse_args",
    "read_corpus",
    "word_counts",
]

logger = get_logger(__name__)

DEFAULT_CORPUS = os.fspath(Path(__file__).resolve().parent / "data" / "sotu.jsonl.gz")
"""The State of the Union corpus shipped with the package (data/PROVENANCE.md)."""
MANIFEST = "manifest.json"
TOKENIZER_TYPE = "SentencePieceTokenizer"
# Text sets, in the order they are preprocessed; the first two are the training mix.
TEXT_SETS = ("en_train", "clone_train", "knowledge_en", "transfer_en", "en_eval", "clone_eval")
_WORD = re.compile(r"(?<!\S)[A-Za-z]+(?![A-Za-z])")


@dataclass(frozen=True, kw_only=True)
class CloneSettingConfig:
    """How the English-Clone setting is cut from the corpus (the flags of
    `python -m prealign_experiments.english_clone.setting`)."""

    corpus: str
    """English corpus: .jsonl or .jsonl.gz with a "text" field per document (--corpus)."""
    output_dir: str
    """Directory the setting is written to (--output-dir)."""
    vocab_size: int = 4000
    """English SentencePiece vocabulary V; the model vocabulary is 2V (--vocab-size)."""
    tokenizer_sentences: int = 0
    """Sentences sampled to train the tokenizer; 0 = all training sentences (--tokenizer-sentences)."""
    chunk_chars: int = 1500
    """Training documents are cut into chunks of about this many characters at sentence ends,
    so the English/clone assignment is fine-grained (--chunk-chars)."""
    eval_every: int = 20
    """Every N-th corpus document (offset N/2) is held out for evaluation, in both languages
    (--eval-every)."""
    clone_share: float = 0.1
    """Share of training chunks written in the clone instead of English (--clone-share)."""
    dictionary_size: int = 1700
    """Most frequent training words considered for the dictionary (--dictionary-size)."""
    heldout_share: float = 0.1
    """Share of those words kept out of the dictionary, never switched or pre-aligned; the
    alignment gap is measured on them (--heldout-share)."""
    knowledge_entities: int = 24
    """Invented entities of the knowledge set, each with one fact per relation (--knowledge-entities)."""
    knowledge_candidates: int = 6
    """Attribute values per relation; chance accuracy is 1/this (--knowledge-candidates)."""
    knowledge_templates: int = 1
    """Training sentences per fact (paraphrases; the queried one first) (--knowledge-templates)."""
    knowledge_names_in_dictionary: bool = True
    """Put the invented entity names (name <-> clone name) in the dictionary, as a bilingual
    dictionary lists proper names: the pre-pass aligns them, and code-switching arms switch them
    in the English fact text (input only). Their clone forms occur in no clone text, so joint
    training has no route from a clone name to its facts. With --no-knowledge-names-in-dictionary
    the names stay out, and knowledge in the clone must come from names composed of aligned
    pieces; that stayed at chance for every arm at the demo scale (bench/RESULTS.md)."""
    transfer_train_examples: int = 3000
    """English-only examples of the transfer skill, month sequences (--transfer-train-examples)."""
    seed: int = 1234
    """Seed of every random choice in the setting (--seed)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 100:
            raise ValueError("--vocab-size must be >= 100")
        if self.tokenizer_sentences < 0:
            raise ValueError("--tokenizer-sentences must be >= 0")
        if self.chunk_chars < 100:
            raise ValueError("--chunk-chars must be >= 100")
        if self.eval_every < 2:
            raise ValueError("--eval-every must be >= 2")
        if not 0.0 < self.clone_share < 1.0:
            raise ValueError("--clone-share must be in (0, 1)")
        if self.dictionary_size < 50:
            raise ValueError("--dictionary-size must be >= 50")
        if not 0.0 <= self.heldout_share < 0.5:
            raise ValueError("--heldout-share must be in [0, 0.5)")
        if self.knowledge_entities < self.knowledge_candidates:
            raise ValueError("--knowledge-entities must be >= --knowledge-candidates")
        if self.knowledge_candidates < 2:
            raise ValueError("--knowledge-candidates must be >= 2")
        if self.transfer_train_examples < 1:
            raise ValueError("--transfer-train-examples must be >= 1")


@dataclass
class CloneSetting:
    """Paths and facts of a built setting (``manifest.json``). Paths are relative to `root`."""

    root: str
    config: dict[str, Any]
    vocab_size: int
    """English vocabulary V (clone id = English id + V)."""
    tokenizer_model: str = "tokenizer/english_clone.model"
    english_tokenizer_model: str = "tokenizer/english.model"
    dictionary_tsv: str = "dictionary/clone_dict.tsv"
    heldout_tsv: str = "dictionary/heldout.tsv"
    lexicon: str = "dictionary/clone_dict.lex"
    heldout_lexicon: str = "dictionary/heldout.lex"
    knowledge: str = "knowledge/facts.json"
    transfer: str = "transfer/probe.json"
    texts: dict[str, str] = field(default_factory=lambda: {name: f"text/{name}.jsonl" for name in TEXT_SETS})
    prefixes: dict[str, str] = field(default_factory=lambda: {name: f"data/{name}_text_document" for name in TEXT_SETS})
    stats: dict[str, Any] = field(default_factory=dict)
    """Counts: documents, words, tokens per text set (after preprocessing), checks."""

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

    def lexicon_jobs(self) -> list[BuildLexiconConfig]:
        """The two lexicons to compile: training dictionary and held-out words (TSV -> .lex)."""
        from megatron_prealign.lexicon import BuildLexiconConfig

        return [
            BuildLexiconConfig(dictionary=self.path(tsv), format="tsv", tokenizer_type=TOKENIZER_TYPE,
                               tokenizer_model=self.path(self.tokenizer_model), output=self.path(lex))
            for tsv, lex in ((self.dictionary_tsv, self.lexicon), (self.heldout_tsv, self.heldout_lexicon))
        ]

    def preprocess_jobs(self, workers: int = 1) -> list[PreprocessConfig]:
        """One preprocessing run per text set; every set gets the code-switch sidecar of the
        training dictionary."""
        from megatron_prealign.data.preprocess import PreprocessConfig

        jobs = []
        for name in TEXT_SETS:
            prefix = self.path(self.prefixes[name])
            output_prefix = prefix[: -len("_text_document")]
            jobs.append(PreprocessConfig(input=self.path(self.texts[name]), output_prefix=output_prefix,
                                         tokenizer_type=TOKENIZER_TYPE, tokenizer_model=self.path(self.tokenizer_model),
                                         append_eod=True, lexicon=self.path(self.lexicon), workers=workers))
        return jobs


def load_setting(root: str | os.PathLike) -> CloneSetting:
    """Read ``<root>/manifest.json`` written by `build_setting`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: build the setting with "
            f"`python -m prealign_experiments.english_clone.setting --output-dir {root}`"
        )
    data = json.loads(path.read_text())
    return CloneSetting(root=os.fspath(root), **data)


def field_docs(cls) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string after each field), for ``--help``."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split()).replace("%", "%%")
    return docs


# ------------------------------------------------------------------------------------------
# corpus


def read_corpus(path: str | os.PathLike) -> list[str]:
    """Document texts of a .jsonl or .jsonl.gz corpus ("text" field), in file order."""
    if not os.path.isfile(path):
        if os.fspath(path) == DEFAULT_CORPUS:
            raise FileNotFoundError(f"the corpus shipped with prealign_experiments is missing ({path}): reinstall "
                                    f"the package with its data files, or give --corpus FILE.jsonl[.gz]")
        raise FileNotFoundError(f"--corpus {path}: no such file (expected .jsonl or .jsonl.gz, one "
                                f'{{"text": ...}} per line)')
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no documents")
    return texts


def chunk_document(text: str, chunk_chars: int) -> list[str]:
    """Consecutive sentence groups of about `chunk_chars` characters."""
    chunks, current, size = [], [], 0
    for sentence in split_sentences(text):
        current.append(sentence)
        size += len(sentence) + 1
        if size >= chunk_chars:
            chunks.append(" ".join(current))
            current, size = [], 0
    if current:
        chunks.append(" ".join(current))
    return chunks


def word_counts(texts: Iterable[str]) -> collections.Counter:
    """Counts of alphabetic words that start after whitespace (how the lexicon scan sees words:
    a word-start piece followed by letters), case-sensitive."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(_WORD.findall(text))
    return counts


def _write_jsonl(path: str, texts: Iterable[str]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                n += 1
    return n


def _write_tsv(path: str, words: Iterable[str]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for word in words:
                f.write(f"{word}\t{to_clone_text(word)}\n")
                n += 1
    return n


# ------------------------------------------------------------------------------------------
# building


def build_sources(cfg: CloneSettingConfig) -> CloneSetting:
    """Write the tokenizers, texts, dictionaries and evaluation sets (see module docstring)."""
    from prealign_experiments.english_clone.knowledge import make_knowledge_set
    from prealign_experiments.english_clone.transfer import make_transfer_probe
    from megatron_prealign.lexicon import build_tokenizer

    root = Path(cfg.output_dir)
    setting = CloneSetting(root=os.fspath(root), config=asdict(cfg), vocab_size=cfg.vocab_size)
    rng = np.random.default_rng(cfg.seed)
    documents = read_corpus(cfg.corpus)
    offset = cfg.eval_every // 2
    eval_docs = [d for i, d in enumerate(documents) if i % cfg.eval_every == offset]
    train_docs = [d for i, d in enumerate(documents) if i % cfg.eval_every != offset]
    if not eval_docs or not train_docs:
        raise ValueError(f"{cfg.corpus}: {len(documents)} documents are too few for --eval-every {cfg.eval_every}")
    chunks = [c for d in train_docs for c in chunk_document(d, cfg.chunk_chars)]
    is_clone = rng.random(len(chunks)) < cfg.clone_share
    logger.info("corpus: %d documents -> %d eval documents, %d training chunks (%d clone)",
                len(documents), len(eval_docs), len(chunks), int(is_clone.sum()))

    # Tokenizers: English unigram model, then the doubled (English + clone) model.
    sentences = [s for d in train_docs for s in split_sentences(d)]
    if cfg.tokenizer_sentences and cfg.tokenizer_sentences < len(sentences):
        pick = np.sort(rng.choice(len(sentences), cfg.tokenizer_sentences, replace=False))
        sentences = [sentences[i] for i in pick]
    english_model = train_english_tokenizer(sentences, cfg.vocab_size)
    clone_model = build_clone_model(english_model)
    checked = verify_clone_model(clone_model, [chunks[i] for i in np.flatnonzero(is_clone)] + eval_docs, cfg.vocab_size)
    for relative, blob in ((setting.english_tokenizer_model, english_model), (setting.tokenizer_model, clone_model)):
        with atomic_path(setting.path(relative)) as tmp:
            tmp.write_bytes(blob)
    tokenizer = build_tokenizer(TOKENIZER_TYPE, setting.path(setting.tokenizer_model))
    logger.info("tokenizer: V=%d, model vocabulary %d; clone encoding verified on %d tokens",
                cfg.vocab_size, tokenizer.vocab_size, checked)

    # Dictionary: the most frequent training words; a held-out share stays out of it. Words the
    # evaluation sets are built from are always in the dictionary.
    counts = word_counts(chunks)
    frequent = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.dictionary_size]]
    known_words = set(word_counts(documents))
    knowledge = make_knowledge_set(tokenizer, frequent, known_words, cfg.knowledge_entities, cfg.knowledge_candidates,
                                   seed=cfg.seed, num_templates=cfg.knowledge_templates)
    transfer = make_transfer_probe(tokenizer, frequent, cfg.transfer_train_examples, seed=cfg.seed)
    required = set(knowledge.required_words()) | set(transfer.required_words())
    optional = [w for w in frequent if w not in required]
    num_heldout = int(round(cfg.heldout_share * len(frequent)))
    heldout_pick = set(rng.choice(len(optional), size=min(num_heldout, len(optional)), replace=False).tolist())
    heldout = [w for i, w in enumerate(optional) if i in heldout_pick]
    heldout_set = set(heldout)
    dictionary = [w for w in frequent if w not in heldout_set]
    if cfg.knowledge_names_in_dictionary:
        dictionary += knowledge.entities
    _write_tsv(setting.path(setting.dictionary_tsv), dictionary)
    _write_tsv(setting.path(setting.heldout_tsv), heldout)

    # Texts.
    texts = {
        "en_train": (c for c, clone in zip(chunks, is_clone) if not clone),
        "clone_train": (to_clone_text(c) for c, clone in zip(chunks, is_clone) if clone),
        "knowledge_en": iter(knowledge.training_texts()),
        "transfer_en": iter(transfer.training_texts()),
        "en_eval": (c for d in eval_docs for c in chunk_document(d, cfg.chunk_chars)),
        "clone_eval": (to_clone_text(c) for d in eval_docs for c in chunk_document(d, cfg.chunk_chars)),
    }
    documents_written = {name: _write_jsonl(setting.path(setting.texts[name]), gen) for name, gen in texts.items()}
    knowledge.save(setting.path(setting.knowledge))
    transfer.save(setting.path(setting.transfer))
    setting.stats = {
        "documents": documents_written,
        "corpus_documents": len(documents),
        "dictionary_words": len(dictionary),
        "heldout_words": len(heldout),
        "clone_check_tokens": checked,
        "knowledge": knowledge.summary(),
        "transfer": transfer.summary(),
    }
    setting.save()
    return setting


def _read_tokens(prefix: str) -> Iterator[np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)
    for i in range(len(dataset)):
        # A copy: the memory-mapped view dies with `dataset`.
        yield np.array(dataset[i])


def finalize(setting: CloneSetting) -> CloneSetting:
    """Check the preprocessed setting and record token counts in ``manifest.json``.

    Checks: every prefix and sidecar exists and validates; English ids stay below V in English
    sets and clone sets use only clone ids (and the shared end-of-document id); the eval sets are
    the same documents in both languages, token for token (clone = English + V); the dictionary
    scan finds the same words in both (clone entry = the English entry's translation).

    Raises:
        ValueError: naming the failed check.
    """
    from megatron_prealign.data.codeswitch import LexiconArrays
    from megatron_prealign.data.sidecar import CodeSwitchSidecar, validate_sidecar
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    tokenizer = build_tokenizer(TOKENIZER_TYPE, setting.path(setting.tokenizer_model))
    lexicon = load_lexicon(setting.path(setting.lexicon), tokenizer)
    load_lexicon(setting.path(setting.heldout_lexicon), tokenizer)
    arrays = LexiconArrays.from_lexicon(lexicon)
    vocab, eod = setting.vocab_size, tokenizer.eod
    tokens: dict[str, int] = {}
    for name in TEXT_SETS:
        prefix = setting.prefix(name)
        validate_sidecar(prefix, lexicon=arrays, lexicon_sha256=lexicon.sha256)
        total = 0
        for doc in _read_tokens(prefix):
            body = doc[doc != eod]
            clone_set = name.startswith("clone")
            if clone_set and len(body) and body.min() < vocab:
                raise ValueError(f"{prefix}: a clone document contains English ids")
            if not clone_set and len(body) and body.max() >= vocab:
                raise ValueError(f"{prefix}: an English document contains clone ids")
            total += len(doc)
        tokens[name] = total

    english_docs = list(_read_tokens(setting.prefix("en_eval")))
    clone_docs = list(_read_tokens(setting.prefix("clone_eval")))
    english_spans = CodeSwitchSidecar(setting.prefix("en_eval"))
    clone_spans = CodeSwitchSidecar(setting.prefix("clone_eval"))
    if len(english_docs) != len(clone_docs):
        raise ValueError("en_eval and clone_eval have different document counts")
    matched = 0
    for i, (en, cl) in enumerate(zip(english_docs, clone_docs)):
        shifted = np.where(en == eod, eod, en.astype(np.int64) + vocab)
        if not np.array_equal(shifted, cl):
            raise ValueError(f"eval document {i}: the clone tokens are not the English tokens + V")
        en_starts, en_lengths, en_entries = english_spans.spans(i)
        cl_starts, cl_lengths, cl_entries = clone_spans.spans(i)
        if not (np.array_equal(en_starts, cl_starts) and np.array_equal(en_lengths, cl_lengths)):
            raise ValueError(f"eval document {i}: the dictionary scan finds other words in the clone")
        for a, b in zip(en_entries, cl_entries):
            if int(b) not in set(lexicon.translations(int(a)).tolist()):
                raise ValueError(f"eval document {i}: clone entry {b} is not a translation of entry {a}")
        matched += len(en_starts)
    setting.stats["tokens"] = tokens
    setting.stats["eval_dictionary_matches"] = matched
    train_tokens = tokens["en_train"] + tokens["clone_train"]
    setting.stats["clone_token_share"] = tokens["clone_train"] / train_tokens
    setting.stats["lexicon_sha256"] = lexicon.sha256
    setting.stats["tokenizer_fingerprint"] = tokenizer.fingerprint
    setting.save()
    logger.info("setting checked: tokens %s; %d dictionary matches identical in both eval languages",
                tokens, matched)
    return setting


# ------------------------------------------------------------------------------------------
# the whole build and its command line


def existing_setting(cfg: CloneSettingConfig) -> Optional[CloneSetting]:
    """The finished setting in ``cfg.output_dir`` if it was built with exactly these options."""
    if not (Path(cfg.output_dir) / MANIFEST).is_file():
        return None
    existing = load_setting(cfg.output_dir)
    if existing.config == asdict(cfg) and "tokens" in existing.stats:
        return existing
    return None


def build_setting(cfg: CloneSettingConfig, *, workers: int = 1) -> CloneSetting:
    """Build the whole setting: `build_sources` -> both lexicons (`build_lexicon`) -> every text
    set (`preprocess`, ``workers`` encoding processes) -> `finalize` (checks, ``manifest.json``).

    Raises:
        ValueError, LexiconError: naming the failed step or check.
    """
    from megatron_prealign.data.preprocess import preprocess
    from megatron_prealign.lexicon import build_lexicon

    start = time.perf_counter()
    setting = build_sources(cfg)
    for job in setting.lexicon_jobs():
        build_lexicon(job)
    for job in setting.preprocess_jobs(workers):
        preprocess(job)
    setting = finalize(setting)
    logger.info("English-Clone setting ready in %s (%.0f s)", cfg.output_dir, time.perf_counter() - start)
    return setting


def build_parser() -> argparse.ArgumentParser:
    """One flag per `CloneSettingConfig` field (``--corpus`` defaults to `DEFAULT_CORPUS`), plus
    ``--workers`` and ``--force``."""
    parser = argparse.ArgumentParser(prog="python -m prealign_experiments.english_clone.setting",
                                     description="Build the English-Clone setting through the normal pipeline.")
    docs = field_docs(CloneSettingConfig)
    parser.add_argument("--output-dir", required=True, help=docs["output_dir"])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=docs["corpus"] + " Default: the shipped corpus")
    for f in dataclasses.fields(CloneSettingConfig):
        if f.name in ("corpus", "output_dir"):
            continue
        if isinstance(f.default, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=f.default, help=f"{docs.get(f.name, '')} Default: %(default)s")
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                                help=f"{docs.get(f.name, '')} Default: %(default)s")
    parser.add_argument("--workers", type=int, default=1, help="preprocessing processes")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching setting exists")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[CloneSettingConfig, argparse.Namespace]:
    """The setting's config from command-line flags (usage errors exit with 2), and the raw
    namespace (``workers``, ``force``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(CloneSettingConfig)}
    try:
        cfg = CloneSettingConfig(**options)
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    return cfg, args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m prealign_experiments.english_clone.setting`: build (or reuse) the setting and
    print its statistics as JSON."""
    from megatron_prealign.lexicon import LexiconError

    cfg, args = parse_args(argv)
    if not args.force and existing_setting(cfg) is not None:
        logger.info("reusing the setting in %s (same options; --force rebuilds it)", args.output_dir)
        return 0
    try:
        setting = build_setting(cfg, workers=args.workers)
    except (LexiconError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(json.dumps(setting.stats, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
