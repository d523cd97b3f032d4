"""The English–Spanish evaluation suite on one model.

| task | what |
|---|---|
| `perplexity` | per-token loss on the held-out chapters (never trained on, in either language), English and Spanish |
| `alignment` | `align.alignment_gap` per layer slot on dictionary words (a seeded sample of whole translation groups of the training lexicon, words found in the training text) and on the held-out words (never switched, never pre-aligned) |
| `retrieval` | EN→ES and ES→EN top-1 accuracy of finding a held-out verse's translation among N verses by mean-pooled hidden states, per layer (`megatron_prealign.evaluate.retrieval`) |
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import numpy as np

from megatron_prealign.log import get_logger
from prealign_experiments.bible_pair.setting import TOKENIZER_TYPE, BibleSetting, word_counts

__all__ = ["TASKS", "evaluate_checkpoint", "evaluate_model", "dictionary_gap_words"]

logger = get_logger(__name__)

TASKS = ("perplexity", "alignment", "retrieval")


def dictionary_gap_words(lexicon, setting: BibleSetting, *, max_words: int, seed: int) -> np.ndarray:
    """Entry ids of the dictionary gap: whole translation groups (`align.gap_words`) of the
    entries whose word occurs in the training text of its language, so the gap is about words
    the model has read."""
    from megatron_prealign.align import gap_words

    texts = []
    for name in ("en_train", "es_train"):
        with open(setting.path(setting.texts[name]), encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    seen = word_counts(texts)
    candidates = [i for i in range(lexicon.num_entries) if seen[lexicon.entry_text(i)]]
    return gap_words(lexicon, candidates, max_words=max_words, seed=seed)


def evaluate_model(model, setting: BibleSetting, cfg, pg_collection, *, seq_length: int,
                   tasks: Sequence[str] = TASKS, seed: int = 0) -> dict[str, Any]:
    """Run `tasks` on a bare single-process model; `cfg` is the `BenchConfig` (eval_tokens,
    alignment_words, retrieval_candidates).

    Returns:
        ``{"perplexity": {"english"|"spanish": {loss, ppl, tokens}}, "alignment": {"dictionary":
        {slot: gap}, "heldout": {...}, "words": {...}}, "retrieval": (retrieval_accuracy's dict),
        "seconds": {task: s}}``; a task whose library function is not installed is left out
        and logged.
    """
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    tokenizer = build_tokenizer(TOKENIZER_TYPE, setting.path(setting.tokenizer_model))
    out: dict[str, Any] = {"seconds": {}}
    for task in tasks:
        start = time.perf_counter()
        if task == "perplexity":
            from megatron_prealign.evaluate.perplexity import heldout_perplexity

            out[task] = {lang: heldout_perplexity(model, setting.prefix(name), seq_length=seq_length,
                                                  max_tokens=cfg.eval_tokens)
                         for lang, name in (("english", "en_eval"), ("spanish", "es_eval"))}
        elif task == "alignment":
            from megatron_prealign.align import alignment_gap

            dictionary = load_lexicon(setting.path(setting.lexicon), tokenizer)
            heldout = load_lexicon(setting.path(setting.heldout_lexicon), tokenizer)
            words = dictionary_gap_words(dictionary, setting, max_words=cfg.alignment_words, seed=seed)
            out[task] = {
                "dictionary": alignment_gap(model, dictionary, words, pg_collection, seed=seed),
                "heldout": alignment_gap(model, heldout, np.arange(heldout.num_entries), pg_collection, seed=seed),
                "words": {"dictionary": int(len(words)), "heldout": int(heldout.num_entries)},
            }
        elif task == "retrieval":
            try:
                from megatron_prealign.evaluate.retrieval import read_parallel, retrieval_accuracy
            except ImportError:
                logger.warning("retrieval skipped: megatron_prealign.evaluate.retrieval is not installed")
                continue
            pairs = read_parallel(setting.path(setting.parallel))
            out[task] = retrieval_accuracy(model, tokenizer, pairs, candidates=cfg.retrieval_candidates, seed=seed,
                                           max_tokens=seq_length)
        else:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        out["seconds"][task] = round(time.perf_counter() - start, 2)
    return out


def evaluate_checkpoint(checkpoint: str | os.PathLike, setting: BibleSetting, cfg, pg_collection, *,
                        tasks: Sequence[str] = TASKS) -> dict[str, Any]:
    """Load `checkpoint` and run `evaluate_model`.

    Raises:
        ValueError: the checkpoint was trained with another tokenizer than the setting's.
    """
    from megatron_prealign.evaluate.loading import load_model

    loaded = load_model(checkpoint, pg_collection)
    expected = setting.stats.get("tokenizer_fingerprint")
    saved = loaded.meta.get("tokenizer_fingerprint")
    if expected and saved and saved != expected:
        raise ValueError(f"{loaded.path} was trained with tokenizer {saved[:12]}..., but the setting {setting.root} "
                         f"uses {expected[:12]}...; evaluate it with the setting it was trained on")
    result = evaluate_model(loaded.model, setting, cfg, pg_collection, seq_length=loaded.config.seq_length, tasks=tasks)
    result["checkpoint"] = os.fspath(loaded.path)
    result["iteration"] = loaded.iteration
    return result
