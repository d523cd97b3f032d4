"""A dictionary file compiled against a tokenizer into a `.lex` file, in one call.

    lexicon = build_lexicon(BuildLexiconConfig(dictionary="en-de.txt", output="en-de.lex",
                                               tokenizer_type="SentencePieceTokenizer",
                                               tokenizer_model="tok.model"))

read_dictionary -> compile_lexicon -> Lexicon.save (atomic); ``tools/build_lexicon.py`` is its
command line (one flag per `BuildLexiconConfig` field) and prints `format_summary`.
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron_prealign.lexicon.dictionary import DEFAULT_MAX_INVALID_FRACTION, FORMATS, read_dictionary
from megatron_prealign.lexicon.lexicon import MODES, Lexicon, compile_lexicon
from megatron_prealign.lexicon.tokenizer import build_tokenizer, canonical_tokenizer_type
from megatron_prealign.log import get_logger

__all__ = ["BuildLexiconConfig", "build_lexicon", "format_summary"]

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

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 <= self.max_invalid_fraction <= 1.0:
            raise ValueError(f"--max-invalid-fraction must be in [0, 1], got {self.max_invalid_fraction!r}")
        object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))


def build_lexicon(cfg: BuildLexiconConfig) -> Lexicon:
    """Read, compile and save the lexicon; returns it.

    Raises:
        LexiconError: a malformed dictionary line (without ``skip_invalid``), more malformed
            lines than ``max_invalid_fraction`` (with it), no translation pair in the file or
            none the tokenizer can represent, an unknown format.
        FileNotFoundError: the dictionary or the tokenizer model does not exist.
    """
    tokenizer = build_tokenizer(cfg.tokenizer_type, cfg.tokenizer_model)
    result = read_dictionary(cfg.dictionary, format=cfg.format, skip_invalid=cfg.skip_invalid,
                             max_invalid_fraction=cfg.max_invalid_fraction)
    for report in result.invalid_reports[:_REPORTED_INVALID]:
        logger.warning("skipped: %s", report)
    lexicon = compile_lexicon(result, tokenizer, case_variants=cfg.case_variants, mode=cfg.mode)
    lexicon.save(cfg.output)
    logger.info("wrote %s", cfg.output)
    return lexicon


def format_summary(summary: dict) -> str:
    """`Lexicon.summary()` as aligned lines for humans."""
    dropped = ", ".join(f"{k}={v}" for k, v in summary["dropped"].items())
    return "\n".join(
        [
            f"entries:            {summary['entries']}",
            f"unique sources:     {summary['unique_sources']}",
            f"multi-token share:  {summary['multi_token_share']:.3f}",
            f"scannable entries:  {summary['scannable_entries']} (mode {summary['mode']})",
            f"groups:             {summary['groups']} (largest {summary['largest_group']})",
            f"dropped:            {dropped}",
            f"sha256:             {summary['sha256']}",
        ]
    )
