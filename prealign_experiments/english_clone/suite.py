"""The English-Clone evaluation suite on one model: perplexity, knowledge, transfer, alignment.

`evaluate_model(model, setting, EvalConfig(...), pg_collection)` returns one JSON-serializable
dict; `evaluate_checkpoint` loads a checkpoint first and checks that it was trained with the
setting's tokenizer.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron_prealign.log import get_logger
from prealign_experiments.english_clone.setting import TOKENIZER_TYPE, CloneSetting

__all__ = ["TASKS", "EvalConfig", "evaluate_checkpoint", "evaluate_model"]

logger = get_logger(__name__)

TASKS = ("perplexity", "knowledge", "transfer", "alignment")
LANGUAGES = ("english", "clone")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What `python -m prealign_experiments.english_clone.evaluate` measures (its flags)."""

    tasks: tuple[str, ...] = TASKS
    """Subset of perplexity, knowledge, transfer, alignment (--tasks)."""
    max_tokens: int = 32768
    """Held-out tokens per language for perplexity (--max-tokens)."""
    batch_size: int = 16
    """Sequences per forward (--batch-size)."""
    alignment_words: int = 1000
    """Dictionary words (whole translation pairs, seeded sample) for the dictionary alignment gap;
    the held-out gap uses every held-out word (--alignment-words)."""
    seed: int = 0
    """Seed of the alignment samples (--seed)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"--tasks must be a non-empty subset of {TASKS}, got {list(self.tasks)}")
        if self.max_tokens < 1 or self.batch_size < 1:
            raise ValueError("--max-tokens and --batch-size must be >= 1")
        if self.alignment_words < 4:
            raise ValueError("--alignment-words must be >= 4")


def evaluate_model(model, setting: CloneSetting, cfg: EvalConfig, pg_collection, *, seq_length: int,
                   tokenizer=None) -> dict[str, Any]:
    """Run the selected tasks on a bare single-process model.

    Returns:
        ``{"perplexity": {lang: {loss, ppl, tokens}}, "knowledge": {lang: {...}},
        "transfer": {lang: {...}}, (knowledge and transfer also ``clone_to_english``: asked in the
        clone, the English candidates ranked), "alignment": {"dictionary": {slot: gap}, "heldout": {...}, "names": {...}},
        "seconds": {task: s}}`` for the selected tasks; ``lang`` is ``english`` / ``clone``.
    """
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    tokenizer = tokenizer or build_tokenizer(TOKENIZER_TYPE, setting.path(setting.tokenizer_model))
    offsets = {"english": 0, "clone": setting.vocab_size}
    out: dict[str, Any] = {"seconds": {}}
    for task in cfg.tasks:
        start = time.perf_counter()
        if task == "perplexity":
            from megatron_prealign.evaluate.perplexity import heldout_perplexity

            out[task] = {lang: heldout_perplexity(model, setting.prefix(f"{'en' if lang == 'english' else 'clone'}_eval"),
                                                  seq_length=seq_length, max_tokens=cfg.max_tokens,
                                                  batch_size=cfg.batch_size)
                         for lang in LANGUAGES}
        elif task == "knowledge":
            from prealign_experiments.english_clone.knowledge import KnowledgeSet, evaluate_knowledge

            kset = KnowledgeSet.load(setting.path(setting.knowledge))
            out[task] = {lang: evaluate_knowledge(model, tokenizer, kset, clone_offset=offsets[lang],
                                                  batch_size=4 * cfg.batch_size) for lang in LANGUAGES}
            # Asked in the clone, answered among the English values: recalled but not translated?
            out[task]["clone_to_english"] = evaluate_knowledge(model, tokenizer, kset, clone_offset=offsets["clone"],
                                                               answer_offset=0, batch_size=4 * cfg.batch_size)
        elif task == "transfer":
            from prealign_experiments.english_clone.transfer import TransferProbe, evaluate_transfer

            probe = TransferProbe.load(setting.path(setting.transfer))
            out[task] = {lang: evaluate_transfer(model, tokenizer, probe, clone_offset=offsets[lang],
                                                 batch_size=4 * cfg.batch_size) for lang in LANGUAGES}
            out[task]["clone_to_english"] = evaluate_transfer(model, tokenizer, probe, clone_offset=offsets["clone"],
                                                              answer_offset=0, batch_size=4 * cfg.batch_size)
        elif task == "alignment":
            from megatron_prealign.align import alignment_gap, gap_words

            dictionary = load_lexicon(setting.path(setting.lexicon), tokenizer)
            heldout = load_lexicon(setting.path(setting.heldout_lexicon), tokenizer)
            from prealign_experiments.english_clone.knowledge import KnowledgeSet, name_lexicon

            names = name_lexicon(tokenizer, KnowledgeSet.load(setting.path(setting.knowledge)), setting.vocab_size)
            out[task] = {
                "dictionary": alignment_gap(model, dictionary, gap_words(dictionary, max_words=cfg.alignment_words, seed=cfg.seed),
                                            pg_collection, seed=cfg.seed),
                "heldout": alignment_gap(model, heldout, np.arange(heldout.num_entries), pg_collection, seed=cfg.seed),
                # The invented entity names: never in the dictionary, never in clone text.
                "names": alignment_gap(model, names, np.arange(names.num_entries), pg_collection, seed=cfg.seed),
            }
        out["seconds"][task] = round(time.perf_counter() - start, 2)
    return out


def evaluate_checkpoint(checkpoint: str | os.PathLike, setting: CloneSetting, cfg: EvalConfig,
                        pg_collection) -> dict[str, Any]:
    """Load `checkpoint` and run `evaluate_model`; adds ``checkpoint`` and ``iteration``.

    Raises:
        ValueError: the checkpoint was trained with another tokenizer than the setting's.
    """
    from megatron_prealign.evaluate.loading import load_model

    loaded = load_model(checkpoint, pg_collection)
    expected = setting.stats.get("tokenizer_fingerprint")
    saved = loaded.meta.get("tokenizer_fingerprint")
    if expected and saved and saved != expected:
        raise ValueError(
            f"{loaded.path} was trained with tokenizer {saved[:12]}..., but the setting {setting.root} "
            f"uses {expected[:12]}...; evaluate it with the setting it was trained on"
        )
    result = evaluate_model(loaded.model, setting, cfg, pg_collection, seq_length=loaded.config.seq_length)
    result["checkpoint"] = os.fspath(loaded.path)
    result["iteration"] = loaded.iteration
    return result
