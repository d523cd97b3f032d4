"""One evaluation of a checkpoint, as the command line runs it and as benchmarks call it:
`EvaluateConfig` (the command line's options, one field each, None where the option was not
given) -> `prepare_evaluation` (every input checked against the checkpoint before the model is
loaded) -> `evaluate_checkpoint` (perplexity with its held-out answer, the alignment gap on the
dictionary and held-out words, cross-lingual retrieval) -> `format_results` (summary lines).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvaluateConfig", "PreparedEvaluation", "evaluate_checkpoint", "format_results", "prepare_evaluation"]

DEFAULT_MAX_TOKENS = 32768
DEFAULT_CANDIDATES = 100

# Options that only mean something next to another one: (field, flag, the field it needs).
_NEEDS = (
    ("max_tokens", "--max-tokens", "data_path"),
    ("heldout_split", "--heldout-split", "data_path"),
    ("documents", "--documents", "data_path"),
    ("split", "--split", "heldout_split"),
    ("align_heldout_fraction", "--align-heldout-fraction", "lexicon"),
    ("seed", "--seed", "lexicon"),
    ("align_seed", "--align-seed", "lexicon"),
    ("align_eval_max_words", "--align-eval-max-words", "lexicon"),
    ("align_max_word_tokens", "--align-max-word-tokens", "lexicon"),
    ("tokenizer_type", "--tokenizer-type", "parallel_data"),
    ("tokenizer_model", "--tokenizer-model", "parallel_data"),
    ("retrieval_candidates", "--retrieval-candidates", "parallel_data"),
    ("retrieval_seed", "--retrieval-seed", "parallel_data"),
)
_FLAG = {"data_path": "--data-path", "heldout_split": "--heldout-split", "lexicon": "--lexicon",
         "parallel_data": "--parallel-data"}


@dataclass(frozen=True)
class EvaluateConfig:
    """What to measure on one checkpoint (`python -m megatron_prealign.evaluate`'s options).

    Raises ValueError, naming the flags, for an option that would have no effect with the others
    given, for two that exclude each other and for out-of-range values."""

    load: str
    """Checkpoint root or checkpoint directory (--load)."""
    batch_size: int = 16
    """Sequences per forward, every measurement (--batch-size)."""
    data_path: tuple[str, ...] = ()
    """Token datasets for perplexity: PREFIX or NAME=PREFIX items, or pretraining's `W1 P1 W2 P2 ...`
    (--data-path)."""
    max_tokens: int | None = None
    """Predicted tokens per dataset at most; None: 32768 (--max-tokens)."""
    heldout_split: str | None = None
    """`valid` or `test`: only the documents pretraining's --split put there (--heldout-split)."""
    split: str | None = None
    """With `heldout_split`: this TRAIN,VALID,TEST split instead of the run's (--split)."""
    documents: str | None = None
    """`FIRST:END`: only these documents of each prefix (--documents)."""
    lexicon: str | None = None
    """Compiled lexicon of the checkpoint's tokenizer for the alignment gap (--lexicon)."""
    align_heldout_fraction: float | None = None
    """Held-out share of translation groups; None: the run's (--align-heldout-fraction)."""
    seed: int | None = None
    """The run's --seed (the split's seed when align_seed is None); None: the run's (--seed)."""
    align_seed: int | None = None
    """Seed of the held-out split; None: the run's (--align-seed)."""
    align_eval_max_words: int | None = None
    """Words per side at most; None: the run's (--align-eval-max-words)."""
    align_max_word_tokens: int | None = None
    """Entries with more tokens are left out; None: the run's (--align-max-word-tokens)."""
    parallel_data: str | None = None
    """JSONL of {"src", "tgt"} translations for cross-lingual retrieval (--parallel-data)."""
    tokenizer_type: str | None = None
    """Tokenizer of the parallel data; None: the run's (--tokenizer-type)."""
    tokenizer_model: str | None = None
    """Its model file; None: the run's (--tokenizer-model)."""
    retrieval_candidates: int | None = None
    """Candidates per sentence, the true one included; None: 100 (--retrieval-candidates)."""
    retrieval_seed: int | None = None
    """Seed of the candidate draws; None: 0 (--retrieval-seed)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_path", tuple(self.data_path or ()))
        if not (self.data_path or self.lexicon or self.parallel_data):
            raise ValueError("nothing to measure: give --data-path (perplexity), --lexicon (alignment gap) and/or "
                             "--parallel-data (cross-lingual retrieval)")
        for name, flag, needs in _NEEDS:
            if getattr(self, name) is not None and not getattr(self, needs):
                raise ValueError(f"{flag} has no effect without {_FLAG[needs]}")
        if self.seed is not None and self.align_seed is not None:
            raise ValueError("--seed has no effect with --align-seed (the split's seed is --align-seed)")
        if self.heldout_split is not None and self.documents is not None:
            raise ValueError("--heldout-split and --documents both pick the documents: give one")
        if self.heldout_split not in (None, "valid", "test"):
            raise ValueError(f"--heldout-split must be valid or test, got {self.heldout_split!r}")
        for value, flag in ((self.batch_size, "--batch-size"), (self.max_tokens, "--max-tokens"),
                            (self.align_eval_max_words, "--align-eval-max-words"),
                            (self.align_max_word_tokens, "--align-max-word-tokens")):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1")
        if self.retrieval_candidates is not None and self.retrieval_candidates < 2:
            raise ValueError("--retrieval-candidates must be >= 2")
        if self.align_heldout_fraction is not None and not 0 <= self.align_heldout_fraction < 1:
            raise ValueError("--align-heldout-fraction must be in [0, 1)")
        if self.documents is not None:
            from megatron_prealign.evaluate.heldout import parse_document_range

            parse_document_range(self.documents)


@dataclass
class PreparedEvaluation:
    """Everything checked and read before the model is loaded."""

    cfg: EvaluateConfig
    meta: dict[str, Any]
    """The checkpoint's prealign_state.json."""
    named: list[tuple[str, str]] = field(default_factory=list)
    """(name, prefix) of each --data-path dataset."""
    documents: dict[str, range] = field(default_factory=dict)
    """By name: the documents to measure."""
    status: dict[str, dict[str, str]] = field(default_factory=dict)
    """By name: {"heldout": yes/no/unknown, "why": ..., "documents": "FIRST:END"}."""
    lexicon: Any = None
    tokenizer: Any = None
    pairs: list[tuple[str, str]] | None = None


def prepare_evaluation(cfg: EvaluateConfig) -> PreparedEvaluation:
    """Read the checkpoint's state and check every input against it (datasets: files, tokenizer,
    vocabulary, document ranges; lexicon and parallel-data tokenizer: fingerprints; enough
    distinct pairs for the candidates), without loading the model.

    Raises:
        DataError, CheckpointError, ValueError: one line naming the flag and the file.
    """
    from megatron_prealign.checkpointing import read_checkpoint_state
    from megatron_prealign.data.integrity import DataError, open_token_dataset
    from megatron_prealign.evaluate.heldout import heldout_status, parse_document_range, split_documents
    from megatron_prealign.evaluate.perplexity import parse_data_paths
    from megatron_prealign.training.data import check_prefixes_exist

    named = parse_data_paths(cfg.data_path) if cfg.data_path else []
    check_prefixes_exist([prefix for _, prefix in named])
    _, meta = read_checkpoint_state(cfg.load)
    prepared = PreparedEvaluation(cfg=cfg, meta=meta, named=named)
    fingerprint = meta.get("tokenizer_fingerprint")
    vocab_size = (meta.get("model") or {}).get("vocab_size")
    run_data = (meta.get("config") or {}).get("data")
    wanted = parse_document_range(cfg.documents) if cfg.documents else None
    for name, prefix in named:  # before minutes of model loading, and for every dataset
        count = len(open_token_dataset(prefix, tokenizer_fingerprint=fingerprint, vocab_size=vocab_size,
                                       flag="--data-path"))
        if cfg.heldout_split:
            split = cfg.split or (run_data or {}).get("split")
            if not split:
                raise DataError(f"--heldout-split {cfg.heldout_split}: the checkpoint records no --split; "
                                "give the run's --split")
            chosen = split_documents(count, split, cfg.heldout_split)
            if not len(chosen):
                raise DataError(f"--data-path {prefix}: --split {split} leaves no {cfg.heldout_split} documents "
                                f"of its {count}")
        elif wanted is not None:
            if wanted.stop > count:
                raise DataError(f"--documents {cfg.documents}: {prefix} has {count} documents")
            chosen = wanted
        else:
            chosen = range(count)
        prepared.documents[name] = chosen
        verdict, why = heldout_status(prefix, chosen, count, run_data)
        prepared.status[name] = {"heldout": verdict, "why": why, "documents": f"{chosen.start}:{chosen.stop}"}
    if cfg.lexicon:
        prepared.lexicon = _lexicon(cfg.lexicon, meta)
    if cfg.parallel_data:
        from megatron_prealign.evaluate.retrieval import check_candidates, distinct_pairs, read_parallel

        prepared.tokenizer = _tokenizer(cfg, meta)
        prepared.pairs = read_parallel(cfg.parallel_data)
        kept, dropped = distinct_pairs(prepared.pairs)
        check_candidates(len(kept), cfg.retrieval_candidates or DEFAULT_CANDIDATES, dropped)
    return prepared


def evaluate_checkpoint(cfg: EvaluateConfig | PreparedEvaluation, pg_collection=None) -> dict[str, Any]:
    """Load the checkpoint and measure what `cfg` asks for.

    Args:
        cfg: the request, or `prepare_evaluation`'s answer for it.
        pg_collection: process groups of a world of one; None: one is made for the call.

    Returns:
        ``{"checkpoint", "iteration", ["perplexity": {name: {loss, ppl, tokens, heldout, why,
        documents}}], ["alignment_gap": lexicon_alignment_gaps + {lexicon, lexicon_is_the_runs}],
        ["retrieval": retrieval_accuracy + {parallel_data}]}``
    """
    prepared = cfg if isinstance(cfg, PreparedEvaluation) else prepare_evaluation(cfg)
    if pg_collection is None:
        from megatron_prealign.evaluate.loading import single_process_group

        with single_process_group() as pgs:
            return _evaluate(prepared, pgs)
    return _evaluate(prepared, pg_collection)


def _evaluate(prepared: PreparedEvaluation, pgs) -> dict[str, Any]:
    from megatron_prealign.evaluate.loading import load_model

    cfg, meta = prepared.cfg, prepared.meta
    loaded = load_model(cfg.load, pgs)
    results: dict[str, Any] = {"checkpoint": str(loaded.path), "iteration": loaded.iteration}
    if prepared.named:
        from megatron_prealign.evaluate.perplexity import dataset_perplexities

        ppl = dataset_perplexities(loaded.model, prepared.named, seq_length=loaded.config.seq_length,
                                   max_tokens=cfg.max_tokens or DEFAULT_MAX_TOKENS, batch_size=cfg.batch_size,
                                   tokenizer_fingerprint=meta.get("tokenizer_fingerprint"),
                                   vocab_size=loaded.config.vocab_size, documents=prepared.documents)
        for name, value in ppl.items():
            value.update(prepared.status[name])
        results["perplexity"] = ppl
    if prepared.lexicon is not None:
        from megatron_prealign.evaluate.alignment import gap_split_from_checkpoint, lexicon_alignment_gaps

        split = gap_split_from_checkpoint(meta, heldout_fraction=cfg.align_heldout_fraction, seed=cfg.seed,
                                          align_seed=cfg.align_seed, max_words=cfg.align_eval_max_words,
                                          max_word_tokens=cfg.align_max_word_tokens)
        gaps = lexicon_alignment_gaps(loaded.model, prepared.lexicon, pgs, split, micro_batch_size=cfg.batch_size * 4)
        gaps["lexicon"] = str(cfg.lexicon)
        gaps["lexicon_is_the_runs"] = (meta.get("lexicon_sha256") == prepared.lexicon.sha256
                                       if meta.get("lexicon_sha256") else None)
        results["alignment_gap"] = gaps
    if prepared.pairs is not None:
        from megatron_prealign.evaluate.retrieval import retrieval_accuracy

        retrieval = retrieval_accuracy(loaded.model, prepared.tokenizer, prepared.pairs,
                                       candidates=cfg.retrieval_candidates or DEFAULT_CANDIDATES,
                                       seed=cfg.retrieval_seed or 0, batch_size=cfg.batch_size)
        retrieval["parallel_data"] = str(cfg.parallel_data)
        results["retrieval"] = retrieval
    return results


def format_results(results: dict[str, Any]) -> list[str]:
    """Summary lines of `evaluate_checkpoint`'s results."""
    from megatron_prealign.evaluate.alignment import format_gaps
    from megatron_prealign.evaluate.perplexity import format_perplexity
    from megatron_prealign.evaluate.retrieval import format_retrieval

    lines = [f"{format_perplexity(name, value)}  held-out: {value['heldout']} ({value['why']})"
             for name, value in results.get("perplexity", {}).items()]
    gaps = results.get("alignment_gap")
    if gaps is not None:
        if gaps.get("lexicon_is_the_runs") is False:
            lines.append(f"alignment   note: {gaps['lexicon']} is not the lexicon the run trained with; "
                         "dictionary/held-out are this lexicon's split")
        lines.extend(format_gaps(gaps))
    if "retrieval" in results:
        lines.extend(format_retrieval(results["retrieval"]))
    return lines


def _tokenizer(cfg: "EvaluateConfig", meta: dict[str, Any]):
    """The tokenizer of --parallel-data: the flags, else the run's (the checkpoint's config);
    its fingerprint must be the checkpoint's."""
    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.lexicon import build_tokenizer
    from megatron_prealign.lexicon.tokenizer import canonical_tokenizer_type

    data = (meta.get("config") or {}).get("data") or {}
    kind = cfg.tokenizer_type or data.get("tokenizer_type") or "SentencePieceTokenizer"
    model = cfg.tokenizer_model or data.get("tokenizer_model")
    if not model:
        raise DataError("--parallel-data needs the model's tokenizer: the checkpoint records none, give "
                        "--tokenizer-type and --tokenizer-model")
    try:
        tokenizer = build_tokenizer(canonical_tokenizer_type(kind), model)
    except (FileNotFoundError, OSError, ValueError) as exc:
        source = "--tokenizer-model" if cfg.tokenizer_model else "the checkpoint's tokenizer (give --tokenizer-model)"
        raise DataError(f"{source} {model}: {exc}") from None
    saved = meta.get("tokenizer_fingerprint")
    if saved and tokenizer.fingerprint != saved:
        raise DataError(f"--tokenizer-model {model} is not the checkpoint's tokenizer (fingerprint "
                        f"{tokenizer.fingerprint[:12]}... vs {saved[:12]}...); give the model file it was trained with")
    return tokenizer


def _lexicon(path: str, meta: dict[str, Any]):
    from megatron_prealign.data.integrity import DataError
    from megatron_prealign.lexicon import LexiconError, load_lexicon

    try:
        lexicon = load_lexicon(path)
    except (LexiconError, OSError) as exc:
        raise DataError(f"--lexicon {exc}" if str(path) in str(exc) else f"--lexicon {path}: {exc}") from None
    saved = meta.get("tokenizer_fingerprint")
    if saved and lexicon.tokenizer_fingerprint and lexicon.tokenizer_fingerprint != saved:
        raise DataError(f"--lexicon {path} was built for another tokenizer than the checkpoint's (fingerprint "
                        f"{lexicon.tokenizer_fingerprint[:12]}... vs {saved[:12]}...); build it with the checkpoint's "
                        "tokenizer (tools/build_lexicon.py)")
    return lexicon
