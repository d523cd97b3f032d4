"""Lexicon ingestion: dictionary files -> translation groups -> tokenized entries -> compiled
`.lex` (token-id trie + translation table) -> scan spans. See README.md in this folder."""
from megatron_prealign.lexicon.build import BuildLexiconConfig, build_lexicon, build_lexicon_and_report, format_summary
from megatron_prealign.lexicon.dictionary import (
    DEFAULT_MAX_INVALID_FRACTION,
    FORMATS,
    DictionaryReadResult,
    LexiconError,
    detect_format,
    read_dictionary,
)
from megatron_prealign.lexicon.lexicon import MODES, Lexicon, compile_lexicon, load_lexicon
from megatron_prealign.lexicon.reference import reference_scan, reference_scan_entries
from megatron_prealign.lexicon.tokenizer import (
    CONTINUATION,
    OTHER,
    TOKENIZER_TYPE_ALIASES,
    TOKENIZER_TYPES,
    canonical_tokenizer_type,
    WORD_START,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    build_tokenizer,
    classify_pieces,
)

__all__ = [
    "BuildLexiconConfig",
    "CONTINUATION",
    "DEFAULT_MAX_INVALID_FRACTION",
    "FORMATS",
    "MODES",
    "OTHER",
    "TOKENIZER_TYPE_ALIASES",
    "TOKENIZER_TYPES",
    "canonical_tokenizer_type",
    "WORD_START",
    "DictionaryReadResult",
    "HuggingFaceTokenizer",
    "Lexicon",
    "LexiconError",
    "SentencePieceTokenizer",
    "Tokenizer",
    "build_lexicon",
    "build_lexicon_and_report",
    "build_tokenizer",
    "classify_pieces",
    "compile_lexicon",
    "detect_format",
    "format_summary",
    "load_lexicon",
    "read_dictionary",
    "reference_scan",
    "reference_scan_entries",
]
