"""A dictionary file compiled against a tokenizer into a `.lex` file, in one call.

    lexicon = build_lexicon(BuildLexiconConfig(dictionary="en-de.txt", output="en-de.lex",
                                               tokenizer_type="SentencePieceTokenizer",
                                               tokenizer_model="tok.model"))

read_dictionary -> [quality filters] -> compile_lexicon -> Lexicon.save (atomic) [-> report];
``tools/build_lexicon.py`` is its command line (one flag per `BuildLexiconConfig` field) and prints
`format_summary` and, with a corpus or ``--report``, `quality.format_report`.

With a corpus (``--corpus``) the dictionary is compiled once as read, the corpus scanned with it to
count each word's matches, the filters applied to the dictionary (``quality.py``), and the
filtered dictionary compiled again; the report scans the corpus with the lexicon that is saved.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron_prealign.lexicon import quality
from megatron_prealign.lexicon.dictionary import DEFAULT_MAX_INVALID_FRACTION, FORMATS, LexiconError, read_dictionary
from megatron_prealign.lexicon.lexicon import MODES, Lexicon, compile_lexicon
from megatron_prealign.lexicon.tokenizer import build_tokenizer, canonical_tokenizer_type
from megatron_prealign.log import get_logger

__all__ = ["BuildLexiconConfig", "build_lexicon", "build_lexicon_and_report", "format_summary"]

logger = get_logger(__name__)

# Malformed lines skipped with `skip_invalid` that are logged one by one; the rest are counted.
_REPORTED_INVALID = 10


@dataclass(frozen=True, kw_only=True)
class BuildLexiconConfig:
    """What `build_lexicon` compiles (each field is the tools/build_lexicon.py flag of the same name)."""

    dictionary: str
    """Dictionary: a MUSE, TSV, JSONL or trans file, or a dictd/FreeDict database (its .index,
    its .dict.dz or their common stem) (--dictionary)."""
    tokenizer_type: str
    """SentencePieceTokenizer or HuggingFaceTokenizer; Megatron-LM's GPTSentencePieceTokenizer and
    Llama2Tokenizer name the first (--tokenizer-type)."""
    tokenizer_model: str
    """.model file, tokenizer.json or Hugging Face directory (--tokenizer-model)."""
    output: str
    """The .lex file, written atomically (--output)."""
    format: str = "auto"
    """Dictionary format, one of FORMATS; auto detects it from the file (--format)."""
    skip_invalid: bool = False
    """Count malformed lines instead of failing (--skip-invalid)."""
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION
    """With skip_invalid, the largest share of data lines that may be malformed; more means the
    file was read in the wrong format and is an error (--max-invalid-fraction)."""
    case_variants: bool = False
    """Also add Capitalized forms of every group (--case-variants)."""
    mode: str = "word"
    """word: scripts with spaces; longest-match: scripts without (--mode)."""
    corpus: tuple[str, ...] = ()
    """Raw text to count matches in: .jsonl ({"text": ...} per line) or one document per line,
    optionally .gz/.bz2/.xz; one file per language gives coverage per language (--corpus)."""
    corpus_json_key: str = "text"
    """The key holding the text in .jsonl corpus files (--corpus-json-key)."""
    stopwords: str | None = None
    """File of words (one per line) removed from the dictionary, case-insensitively (--stopwords)."""
    stopwords_top_k: int = 0
    """Remove the N most matched dictionary words of each side; needs a corpus (--stopwords-top-k)."""
    min_frequency: int = 0
    """Remove dictionary words with fewer corpus matches; needs a corpus (--min-frequency)."""
    max_translations: int = 0
    """Keep at most K translations per word, the most matched in the corpus, else the first
    listed; 0 keeps all (--max-translations)."""
    report: str | None = None
    """Write the quality report (coverage, top and never-matched entries, group sizes) to this
    JSON file (--report)."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.max_invalid_fraction <= 1.0:
            raise ValueError(f"--max-invalid-fraction must be in [0, 1], got {self.max_invalid_fraction!r}")
        object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))
        object.__setattr__(self, "corpus", tuple(self.corpus))
        for name in ("stopwords_top_k", "min_frequency", "max_translations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0, got {value!r}")
        for name in ("stopwords_top_k", "min_frequency"):
            if getattr(self, name) and not self.corpus:
                raise ValueError(f"--{name.replace('_', '-')} counts matches in a corpus: give it with --corpus FILE")

    @property
    def filters(self) -> bool:
        """Whether any quality filter is asked for."""
        return bool(self.stopwords or self.stopwords_top_k or self.min_frequency or self.max_translations)


def build_lexicon(cfg: BuildLexiconConfig) -> Lexicon:
    """Read, filter, compile and save the lexicon (and the report, if asked); returns it.

    Raises:
        LexiconError: a malformed dictionary line (without ``skip_invalid``), more malformed
            lines than ``max_invalid_fraction`` (with it), no translation pair in the file or
            none the tokenizer can represent (or none left by the filters), an unknown format,
            a malformed corpus or stop-word file.
        FileNotFoundError: the dictionary, the tokenizer model, a corpus or stop-word file does
            not exist.
    """
    return build_lexicon_and_report(cfg)[0]


def build_lexicon_and_report(cfg: BuildLexiconConfig) -> tuple[Lexicon, dict | None]:
    """`build_lexicon`, also returning the quality report (None without a corpus or ``report``)."""
    tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    result = read_dictionary(cfg.dictionary, format=cfg.format, skip_invalid=cfg.skip_invalid,
                             max_invalid_fraction=cfg.max_invalid_fraction)
    for report in result.invalid_reports[:_REPORTED_INVALID]:
        logger.warning("skipped: %s", report)
    stopwords = quality.read_stopwords(cfg.stopwords) if cfg.stopwords else None
    corpora = [quality.tokenize_corpus(path, tokenizer, cfg.corpus_json_key) for path in cfg.corpus]
    for c in corpora:
        logger.info("corpus %s: %d documents, %d tokens", c.path, c.doc_lengths.size, c.num_tokens)

    def compile_(r):
        return compile_lexicon(r, tokenizer, case_variants=cfg.case_variants, mode=cfg.mode)

    outcome = None
    if cfg.filters:
        frequency = None
        if corpora:
            unfiltered = compile_(result)
            scans = [quality.scan_corpus(unfiltered, c) for c in corpora]
            frequency = quality.word_frequencies(result, unfiltered, tokenizer, scans, cfg.case_variants)
        before = len(result.groups)
        result, outcome = quality.filter_dictionary(
            result, frequency, stopwords=stopwords, stopwords_top_k=cfg.stopwords_top_k,
            min_frequency=cfg.min_frequency, max_translations=cfg.max_translations)
        dropped = ", ".join(f"{k}={v}" for k, v in outcome.dropped_groups.items()) or "none"
        logger.info("filters kept %d of %d translation groups (dropped: %s)", len(result.groups), before, dropped)
        if not result.groups:
            raise LexiconError(f"{cfg.dictionary}: the filters left no translation pair (dropped: {dropped}); "
                               f"lower --stopwords-top-k / --min-frequency or check --stopwords")
    lexicon = compile_(result)
    report = None
    if corpora or cfg.report:
        scans = [quality.scan_corpus(lexicon, c) for c in corpora]
        report = quality.lexicon_report(lexicon, result, tokenizer, scans, outcome, cfg.case_variants)
    lexicon.save(cfg.output)
    logger.info("wrote %s", cfg.output)
    if cfg.report:
        quality.write_report(report, cfg.report)
        logger.info("wrote %s", cfg.report)
    return lexicon, report


def format_summary(summary: dict) -> str:
    """`Lexicon.summary()` as aligned lines for humans."""
    dropped = ", ".join(f"{k}={v}" for k, v in summary["dropped"].items())
    return "\n".join(
        [
            f"entries:            {summary['entries']}",
            f"unique sources:     {summary['unique_sources']}",
            f"multi-token share:  {summary['multi_token_share']:.3f}",
            f"scannable entries:  {summary['scannable_entries']} (mode {summary['mode']})",
            f"groups:             {summary['groups']} (largest {summary['largest_group']}; a group is the words "
            f"linked through translations of translations)",
            f"dropped:            {dropped}",
            f"sha256:             {summary['sha256']}",
        ]
    )
