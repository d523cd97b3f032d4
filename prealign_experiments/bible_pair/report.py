"""The benchmark report: aggregation over seeds, comparisons with joint training, PNG plots and
``report.md``. Pure functions of the per-run results (``<run>/eval.json``), so the report can be
regenerated without training.

An effect is stated only where it exceeds the seed spread: the seed ranges of the arm and of
joint training do not overlap (min of one above max of the other), with at least 2 seeds.
"""
from __future__ import annotations

import math
import os
import platform
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path
from prealign_experiments.bible_pair.config import ARMS

__all__ = ["aggregate", "compare", "metric_table", "metric_values", "write_plots", "write_report"]

_COLORS = {"joint": "tab:gray", "prepass": "tab:blue", "codeswitch": "tab:orange", "prealign": "tab:red"}


def metric_table(result: dict[str, Any]) -> "OrderedDict[str, tuple[str, bool, str]]":
    """name -> (label, higher is better, format) of every metric of a run (retrieval and gap per
    layer slot included)."""
    final = result["final"]
    table: "OrderedDict[str, tuple[str, bool, str]]" = OrderedDict([
        ("spanish_ppl", ("Spanish held-out ppl", False, "{:.1f}")),
        ("english_ppl", ("English held-out ppl", False, "{:.1f}")),
        ("gap_dictionary", ("gap, dictionary words", True, "{:+.3f}")),
        ("gap_heldout", ("gap, held-out words", True, "{:+.3f}")),
    ])
    if "retrieval" in final:
        table["retrieval_best"] = ("EN→ES retrieval, best layer", True, "{:.1%}")
        for slot in final["retrieval"]["src->tgt"]:
            table[f"retrieval_{slot}"] = (f"EN→ES retrieval, {slot}", True, "{:.1%}")
    for words in ("dictionary", "heldout"):
        for slot in final["alignment"][words] if "alignment" in final else ():
            table[f"gap_{words}_{slot}"] = (f"gap {words}, {slot}", True, "{:+.3f}")
    return table


def metric_values(result: dict[str, Any], key: str = "final") -> dict[str, float]:
    """The numbers of one run: perplexities, alignment gaps (mean over layer slots, and per
    slot), EN→ES retrieval per slot and at its best slot; `key` ``final`` (equal tokens) or
    ``same_iterations`` (equal pretraining iterations)."""
    final = result[key]
    out = {"spanish_ppl": final["perplexity"]["spanish"]["ppl"], "english_ppl": final["perplexity"]["english"]["ppl"]}
    for words in ("dictionary", "heldout"):
        gaps = final["alignment"][words]
        out[f"gap_{words}"] = float(np.mean(list(gaps.values())))
        out.update({f"gap_{words}_{slot}": float(v) for slot, v in gaps.items()})
    if "retrieval" in final:
        accuracy = final["retrieval"]["src->tgt"]
        out.update({f"retrieval_{slot}": float(v) for slot, v in accuracy.items()})
        out["retrieval_best"] = float(max(accuracy.values()))
    return out


def aggregate(results: Sequence[dict[str, Any]], key: str = "final") -> "OrderedDict[str, dict[str, dict[str, Any]]]":
    """arm -> metric -> {values (by seed), seeds, mean, std (sample; 0 for one seed), min, max}
    of `metric_values(result, key)`; runs without `key` are left out."""
    by_arm: "OrderedDict[str, list[dict[str, Any]]]" = OrderedDict()
    for result in results:
        if result.get(key):
            by_arm.setdefault(result["arm"], []).append(result)
    out: "OrderedDict[str, dict[str, dict[str, Any]]]" = OrderedDict()
    for arm, runs in by_arm.items():
        values = [metric_values(r, key) for r in runs]
        out[arm] = {}
        for name in values[0]:
            v = np.array([x[name] for x in values if name in x], dtype=np.float64)
            out[arm][name] = {"values": v.tolist(), "seeds": [r["seed"] for r in runs], "mean": float(v.mean()),
                              "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                              "min": float(v.min()), "max": float(v.max())}
    return out


def compare(stats, table, arm: str, baseline: str = "joint") -> dict[str, dict[str, Any]]:
    """Per metric: difference of means (``relative`` too), whether `arm` is better, and whether
    the two arms' seed ranges are disjoint (the effect exceeds the seed spread; >= 2 seeds)."""
    out = {}
    for name, (_, higher_better, _) in table.items():
        if name not in stats[arm] or name not in stats[baseline]:
            continue
        a, b = stats[arm][name], stats[baseline][name]
        diff = a["mean"] - b["mean"]
        better = diff > 0 if higher_better else diff < 0
        disjoint = (a["min"] > b["max"] or a["max"] < b["min"]) and len(a["values"]) > 1 and len(b["values"]) > 1
        out[name] = {"difference": diff, "relative": diff / b["mean"] if b["mean"] else math.nan,
                     "better": bool(better), "beyond_seed_spread": bool(disjoint)}
    return out


def _fmt(fmt: str, entry: dict[str, Any]) -> str:
    text = fmt.format(entry["mean"])
    if len(entry["values"]) > 1:
        spread = fmt.replace("+", "").format(entry["std"])
        text += f" ± {spread}"
    return text


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> None:
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _per_slot(results, arm: str, key) -> tuple[list[str], np.ndarray]:
    rows = [key(r) for r in results if r["arm"] == arm]
    slots = list(rows[0])
    return slots, np.array([[row[s] for s in slots] for row in rows])


def write_plots(results: Sequence[dict[str, Any]], out_dir: str) -> dict[str, str]:
    """loss_curves.png, alignment_gap.png and (when measured) retrieval.png in `out_dir`."""
    files = {}
    arms = list(dict.fromkeys(r["arm"] for r in results))
    figure = _figure(11, 4)
    for k, lang in enumerate(("english", "spanish")):
        axes = figure.add_subplot(1, 2, k + 1)
        for result in results:
            curve = result["curve"]
            axes.plot([p["tokens"] / 1e6 for p in curve], [p[lang] for p in curve], marker="o", markersize=3,
                      color=_COLORS.get(result["arm"]), alpha=0.8,
                      label=f"{ARMS[result['arm']].label} (seed {result['seed']})")
        axes.set_yscale("log")
        axes.set_xlabel("tokens seen (millions, pre-pass included)")
        axes.set_ylabel("held-out perplexity")
        axes.set_title(f"{lang.capitalize()} held-out perplexity")
        axes.grid(alpha=0.3)
    axes.legend(fontsize=6)
    _save(figure, os.path.join(out_dir, "loss_curves.png"))
    files["loss_curves"] = "loss_curves.png"

    figure = _figure(11, 4)
    for k, (words, title) in enumerate((("dictionary", "dictionary words"),
                                        ("heldout", "held-out words (never switched or pre-aligned)"))):
        axes = figure.add_subplot(1, 2, k + 1)
        for arm in arms:
            slots, values = _per_slot(results, arm, lambda r: r["final"]["alignment"][words])
            axes.errorbar(range(len(slots)), values.mean(axis=0),
                          yerr=values.std(axis=0, ddof=1) if len(values) > 1 else None,
                          marker="o", capsize=3, color=_COLORS.get(arm), label=ARMS[arm].label)
            axes.set_xticks(range(len(slots)))
            axes.set_xticklabels(slots, rotation=30, ha="right", fontsize=8)
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.set_ylabel("cos(translations) - cos(random pairs)")
        axes.set_title(f"alignment gap, {title}", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    _save(figure, os.path.join(out_dir, "alignment_gap.png"))
    files["alignment_gap"] = "alignment_gap.png"

    if all("retrieval" in r["final"] for r in results):
        figure = _figure(7, 4)
        axes = figure.add_subplot(1, 1, 1)
        for arm in arms:
            slots, values = _per_slot(results, arm, lambda r: r["final"]["retrieval"]["src->tgt"])
            axes.errorbar(range(len(slots)), 100 * values.mean(axis=0),
                          yerr=100 * values.std(axis=0, ddof=1) if len(values) > 1 else None,
                          marker="o", capsize=3, color=_COLORS.get(arm), label=ARMS[arm].label)
            axes.set_xticks(range(len(slots)))
            axes.set_xticklabels(slots, rotation=30, ha="right", fontsize=8)
        chance = results[0]["final"]["retrieval"]["chance"]
        axes.axhline(100 * chance, color="black", linestyle="--", linewidth=0.8, label=f"chance ({chance:.0%})")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(f"EN→ES verse retrieval among {results[0]['final']['retrieval']['candidates']} candidates")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        _save(figure, os.path.join(out_dir, "retrieval.png"))
        files["retrieval"] = "retrieval.png"
    return files


def _effects(stats, table, comparisons, seeds: int, indent: str = "") -> list[str]:
    """One sentence per effect beyond the seed spread (headline metrics and retrieval per layer)."""
    lines = []
    headline = [n for n in table if not n.startswith("gap_dictionary_") and not n.startswith("gap_heldout_")]
    for arm, comp in comparisons.items():
        label = ARMS[arm].label
        found = []
        for name in headline:
            c = comp.get(name)
            if c is None or not c["beyond_seed_spread"]:
                continue
            text, _, fmt = table[name]
            a, b = stats[arm][name], stats["joint"][name]
            found.append(f"{indent}  - {text}: {_fmt(fmt, a)} vs {_fmt(fmt, b)} for joint training "
                         f"({'better' if c['better'] else 'worse'}"
                         + (f", {c['relative']:+.1%}" if name.endswith("_ppl") else "") + ").")
        if seeds < 2:
            lines.append(f"{indent}- **{label}**: one seed, so no effect can be told from seed noise.")
        elif found:
            lines.append(f"{indent}- **{label} vs joint training**, effects beyond the seed spread (seed ranges do not "
                         f"overlap):")
            lines += found
        else:
            lines.append(f"{indent}- **{label} vs joint training**: no difference beyond the seed spread.")
    return lines


def _coverage(setting_stats: dict[str, Any]) -> str:
    corpus = (setting_stats.get("quality") or {}).get("corpus") or []
    if len(corpus) != 2:
        return ""
    return (f"; {corpus[0]['coverage']:.1%} of the English and {corpus[1]['coverage']:.1%} of the Spanish training "
            f"tokens lie in dictionary matches")


def _filters(setting_stats: dict[str, Any]) -> str:
    filters = (setting_stats.get("quality") or {}).get("filters") or {}
    used = [f"--{k.replace('_', '-')} {v}" for k, v in filters.items() if v]
    return ", ".join(used) if used else "none"


def write_report(path: str, *, results: Sequence[dict[str, Any]], setting_stats: dict[str, Any],
                 budget: dict[str, Any], config: dict[str, Any], plots: dict[str, str], seconds: float,
                 command: str) -> dict[str, Any]:
    """Write ``report.md``; returns the aggregated numbers (results.json holds them too)."""
    stats = aggregate(results)
    table = metric_table(results[0])
    seeds = max(len(s["spanish_ppl"]["values"]) for s in stats.values())
    comparisons = {arm: compare(stats, table, arm) for arm in stats if arm != "joint" and "joint" in stats}
    headline = ["spanish_ppl", "english_ppl", "gap_dictionary", "gap_heldout"] + (
        ["retrieval_best"] if "retrieval_best" in table else [])
    retrieval_slots = [n for n in table if n.startswith("retrieval_") and n != "retrieval_best"]
    d = setting_stats["dictionary"]
    lexicon = setting_stats["lexicon"]
    final0 = results[0]["final"]
    lines = [
        "# English–Spanish Bible benchmark: joint training vs PreAlign",
        "",
        f"`{command}` — {len(results)} runs ({len(stats)} arms × {seeds} seed{'s' if seeds > 1 else ''}); this "
        f"invocation took {seconds / 60:.1f} min on {os.cpu_count()} CPU core(s) "
        f"({platform.processor() or platform.machine()}; finished runs are reused).",
        "",
        "## Results (mean ± sample sd over seeds)",
        "",
        "| arm | " + " | ".join(table[n][0] for n in headline) + " |",
        "|---|" + "---|" * len(headline),
    ]
    for arm, entry in stats.items():
        lines.append(f"| {ARMS[arm].label} | " + " | ".join(_fmt(table[n][2], entry[n]) for n in headline) + " |")
    if retrieval_slots:
        r = final0["retrieval"]
        lines += ["", f"EN→ES retrieval top-1 per layer ({r['n']} held-out verse pairs, {r['candidates']} "
                      f"candidates, chance {r['chance']:.1%}):", "",
                  "| arm | " + " | ".join(n[len("retrieval_"):] for n in retrieval_slots) + " |",
                  "|---|" + "---|" * len(retrieval_slots)]
        for arm, entry in stats.items():
            lines.append(f"| {ARMS[arm].label} | " + " | ".join(_fmt("{:.1%}", entry[n]) for n in retrieval_slots)
                         + " |")
    else:
        lines += ["", "Retrieval was not measured: `megatron_prealign.evaluate.retrieval` is not installed in this "
                      "checkout (rerun the same command once it is; trained runs are reused)."]
    words = final0["alignment"]["words"]
    lines += [
        "",
        f"Perplexity on {final0['perplexity']['spanish']['tokens']:,} Spanish and "
        f"{final0['perplexity']['english']['tokens']:,} English tokens of the held-out chapters (never trained on, "
        f"in either language). Alignment gap: mean over layer slots of cos(word, translation) − cos(random word "
        f"pairs), on {words['dictionary']} dictionary words (whole translation groups of the training lexicon, "
        f"words found in the training text) and on the {words['heldout']} held-out words (never switched, never "
        f"pre-aligned). Retrieval: the best layer slot of each run; per layer above.",
        "",
        "## Effects",
        "",
        "Equal tokens (the pre-pass counted; the table above):",
        "",
        *(_effects(stats, table, comparisons, seeds) or ["- (joint training was not among the arms)"]),
        "",
    ]
    same = aggregate(results, "same_iterations")
    if "joint" in same and len(same) > 1 and len(same["joint"]["spanish_ppl"]["values"]) == seeds:
        iters = config["train_iters"]
        lines += [f"Equal pretraining iterations (the authors' convention, the pre-pass not counted): every arm "
                  f"after {iters} iterations; arms without the pre-pass measured at their checkpoint of iteration "
                  f"{iters} (their cosine schedule then near its end, not at it):", "",
                  "| arm | " + " | ".join(table[n][0] for n in headline) + " |", "|---|" + "---|" * len(headline)]
        for arm, entry in same.items():
            lines.append(f"| {ARMS[arm].label} | " + " | ".join(_fmt(table[n][2], entry[n]) for n in headline) + " |")
        same_comparisons = {arm: compare(same, table, arm) for arm in same if arm != "joint"}
        lines += ["", *_effects(same, table, same_comparisons, seeds), ""]
    lines += [f"![held-out perplexity per language]({plots['loss_curves']})", "",
              f"![alignment gap by layer]({plots['alignment_gap']})", ""]
    if "retrieval" in plots:
        lines += [f"![retrieval by layer]({plots['retrieval']})", ""]
    lines += ["## Per-seed values", "",
              "| arm | seed | " + " | ".join(table[n][0] for n in headline) + " | tokens | pre-pass time | train time |",
              "|---|---|" + "---|" * (len(headline) + 3)]
    for result in results:
        values = metric_values(result)
        lines.append(f"| {ARMS[result['arm']].label} | {result['seed']} | "
                     + " | ".join(table[n][2].format(values[n]) for n in headline)
                     + f" | {result['tokens']:,} | {(result.get('prepass_seconds') or 0):.0f} s"
                     + f" | {(result.get('train_seconds') or 0) / 60:.1f} min |")
    tokens = setting_stats["tokens"]
    chapters = setting_stats["chapters"]
    lines += [
        "",
        "## Setting and budget",
        "",
        f"- Text: King James Version (Debian `sword-text-kjv`) and Reina-Valera 1909 (`sword-text-sparv`), read "
        f"from their SWORD modules at run time; documents are chapters. {chapters['heldout']} chapters (every "
        f"{config['setting'].get('eval_every')}th) are held out in both languages; of the {chapters['train']} "
        f"training chapters {chapters['train_spanish']} are given in Spanish, the rest in English (disjoint text): "
        f"{tokens['en_train']:,} English + {tokens['es_train']:,} Spanish training tokens "
        f"({setting_stats['spanish_token_share']:.1%} Spanish).",
        f"- Tokenizer: SentencePiece unigram, {config['setting'].get('vocab_size')} pieces, trained on the training "
        f"text of both languages.",
        f"- Dictionary: FreeDict English–Spanish (`dict-freedict-eng-spa`, {d['format']} format, "
        f"{d['dictionary_pairs']:,} pairs of {d['dictionary_english_words']:,} English words); quality filters on the "
        f"training dictionary: {_filters(setting_stats)}. "
        f"{d['heldout_english_words']} of the {d['attested_english_words']} dictionary words found in the text are "
        f"held out ({d['heldout_pairs']} pairs), with every pair touching them or their translations removed from "
        f"the training dictionary ({d['train_pairs']:,} pairs, {d['train_pairs_in_text']:,} with both words in "
        f"the text). Training lexicon: {lexicon['entries']:,} entries (case variants "
        f"{'on' if config['setting'].get('case_variants') else 'off'}), {lexicon['summary'].get('groups')} "
        f"translation components, the largest {lexicon['summary'].get('largest_group')} entries"
        + _coverage(setting_stats) + ".",
        f"- Model: GPT, {config['num_layers']} layers, d={config['hidden_size']}, ffn {config['ffn_hidden_size']}, "
        f"{config['num_attention_heads']} heads, context {config['seq_length']}, untied embeddings "
        f"(megatron-core local spec, fp32, CPU, {config['threads']} thread per process).",
        f"- Budget per arm, pre-pass counted (the English-Clone demo's convention): "
        f"{budget['tokens_per_arm']:,} tokens ({budget['tokens_per_iteration']:,} per iteration, "
        f"{budget['epochs_of_training_text']:.2f} passes over the training text). Pre-pass arms: "
        f"{config['align_steps']} pre-pass steps × {config['align_pairs']} pairs ({budget['prepass_tokens']:,} "
        f"tokens at {budget['mean_word_tokens']:.2f} tokens per dictionary word, {budget['prepass_share']:.1%} of "
        f"the budget) + {config['train_iters']} iterations; the others {config['train_iters']} + "
        f"{budget['extra_iterations_without_prepass']} iterations. Under the authors' convention (the pre-pass not "
        f"counted) every arm would run {config['train_iters']} iterations and the pre-pass arms would see "
        f"{budget['prepass_tokens']:,} tokens more than the others.",
        f"- Code-switching arms: input-only, ratio {config['codeswitch_ratio']}. Optimizer: lr {config['lr']} → "
        f"{config['min_lr']} cosine, warmup {config['lr_warmup_iters']}, weight decay {config['weight_decay']}, "
        f"clip {config['clip_grad']}; pre-pass lr {config['align_lr']}.",
        "",
        "Full numbers: `results.json`; per-run logs: `logs/`; each run's metrics: `runs/<arm>-s<seed>/metrics.jsonl`.",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"stats": stats, "comparisons": comparisons,
            "same_iterations": {"stats": same, "comparisons": {arm: compare(same, table, arm) for arm in same
                                                               if arm != "joint" and "joint" in same}}}
