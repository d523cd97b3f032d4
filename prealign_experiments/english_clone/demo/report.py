"""The demo report: aggregation over seeds, comparisons with joint training, PNG plots, and
``report.md``. Pure functions of the per-run results (``<run>/eval.json``), so the report can be
regenerated without training.
"""
from __future__ import annotations

import math
import os
import platform
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path
from prealign_experiments.english_clone.demo.config import ARMS

__all__ = ["METRICS", "aggregate", "compare", "metric_values", "write_plots", "write_report"]

# name -> (label, higher is better, format)
METRICS: "OrderedDict[str, tuple[str, bool, str]]" = OrderedDict([
    ("clone_ppl", ("clone ppl", False, "{:.1f}")),
    ("english_ppl", ("English ppl", False, "{:.1f}")),
    ("knowledge_clone", ("knowledge, clone", True, "{:.1%}")),
    ("knowledge_english", ("knowledge, English", True, "{:.1%}")),
    ("knowledge_clone_to_english", ("knowledge, clone→English", True, "{:.1%}")),
    ("transfer_clone", ("transfer, clone", True, "{:.1%}")),
    ("transfer_english", ("transfer, English", True, "{:.1%}")),
    ("gap_dictionary", ("align. gap, dictionary", True, "{:.3f}")),
    ("gap_heldout", ("align. gap, held-out", True, "{:.3f}")),
    ("gap_names", ("align. gap, names", True, "{:.3f}")),
])


def metric_values(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of one run: perplexities and alignment gaps (averaged over layer
    slots) after pretraining (phase 1), knowledge and transfer after the English-only phase 2."""
    pretrained, final = result["pretrained"], result["final"]
    return {
        "clone_ppl": pretrained["perplexity"]["clone"]["ppl"],
        "english_ppl": pretrained["perplexity"]["english"]["ppl"],
        "knowledge_clone": final["knowledge"]["clone"]["accuracy"],
        "knowledge_english": final["knowledge"]["english"]["accuracy"],
        "knowledge_clone_to_english": final["knowledge"]["clone_to_english"]["accuracy"],
        "transfer_clone": final["transfer"]["clone"]["accuracy"],
        "transfer_english": final["transfer"]["english"]["accuracy"],
        "gap_dictionary": float(np.mean(list(pretrained["alignment"]["dictionary"].values()))),
        "gap_heldout": float(np.mean(list(pretrained["alignment"]["heldout"].values()))),
        "gap_names": float(np.mean(list(final["alignment"]["names"].values()))),
    }


def aggregate(results: Sequence[dict[str, Any]]) -> "OrderedDict[str, dict[str, dict[str, Any]]]":
    """arm -> metric -> {values (by seed), mean, std (0 for one seed), min, max}."""
    by_arm: "OrderedDict[str, list[dict[str, Any]]]" = OrderedDict()
    for result in results:
        by_arm.setdefault(result["arm"], []).append(result)
    out: "OrderedDict[str, dict[str, dict[str, Any]]]" = OrderedDict()
    for arm, runs in by_arm.items():
        values = [metric_values(r) for r in runs]
        out[arm] = {}
        for name in METRICS:
            v = np.array([x[name] for x in values], dtype=np.float64)
            out[arm][name] = {"values": v.tolist(), "seeds": [r["seed"] for r in runs], "mean": float(v.mean()),
                              "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                              "min": float(v.min()), "max": float(v.max())}
    return out


def compare(stats: dict[str, dict[str, dict[str, Any]]], arm: str, baseline: str = "joint") -> dict[str, dict[str, Any]]:
    """Per metric: difference of means (``relative`` for perplexities), whether `arm` is better,
    and whether the seed ranges of the two arms are disjoint (only meaningful with >= 2 seeds)."""
    out = {}
    for name, (_, higher_better, _) in METRICS.items():
        a, b = stats[arm][name], stats[baseline][name]
        diff = a["mean"] - b["mean"]
        better = diff > 0 if higher_better else diff < 0
        disjoint = a["min"] > b["max"] if higher_better else a["max"] < b["min"]
        out[name] = {"difference": diff, "relative": diff / b["mean"] if b["mean"] else math.nan,
                     "better": bool(better), "beyond_seed_range": bool(disjoint) and len(a["values"]) > 1}
    return out


def _fmt(name: str, entry: dict[str, Any]) -> str:
    fmt = METRICS[name][2]
    text = fmt.format(entry["mean"])
    if len(entry["values"]) > 1:
        spread = fmt.format(entry["std"]).rstrip("%")
        text += f" ± {spread}" + ("%" if fmt.endswith("%}") else "")
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


_COLORS = {"joint": "tab:gray", "prepass": "tab:blue", "codeswitch": "tab:orange", "prealign": "tab:red"}


def write_plots(results: Sequence[dict[str, Any]], stats, out_dir: str) -> dict[str, str]:
    """loss_curves.png, alignment_gap.png, accuracy.png in `out_dir`; returns {name: file name}."""
    files = {}
    # 1. Held-out perplexity per language along training (x: tokens incl. pre-pass tokens).
    figure = _figure(11, 4)
    for k, lang in enumerate(("english", "clone")):
        axes = figure.add_subplot(1, 2, k + 1)
        for result in results:
            curve = [p for p in result["curve"] if p.get("phase", 1) == 1]
            axes.plot([p["tokens"] / 1e6 for p in curve], [p[lang] for p in curve], marker="o", markersize=3,
                      color=_COLORS.get(result["arm"]), alpha=0.85,
                      label=f"{ARMS[result['arm']].label} (seed {result['seed']})")
            after = [p for p in result["curve"] if p.get("phase", 1) == 2]
            if after:  # after the English-only phase 2, drawn apart (its mix differs)
                axes.plot([curve[-1]["tokens"] / 1e6, after[-1]["tokens"] / 1e6], [curve[-1][lang], after[-1][lang]],
                          linestyle=":", marker="x", color=_COLORS.get(result["arm"]), alpha=0.85)
        axes.set_yscale("log")
        axes.set_xlabel("tokens seen (millions, pre-pass included; dotted: English-only phase 2)")
        axes.set_ylabel("held-out perplexity")
        axes.set_title(f"{'English' if lang == 'english' else 'clone'} held-out perplexity")
        axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, os.path.join(out_dir, "loss_curves.png"))
    files["loss_curves"] = "loss_curves.png"

    # 2. Alignment gap by layer slot (mean over seeds): dictionary and held-out words after
    # pretraining, the knowledge entities' names after phase 2.
    figure = _figure(15, 4)
    titles = {"dictionary": "dictionary words", "heldout": "held-out words (never in the dictionary)",
              "names": "entity names (knowledge set), after phase 2"}
    for k, words in enumerate(titles):
        axes = figure.add_subplot(1, 3, k + 1)
        by_arm: dict[str, list[dict[str, float]]] = {}
        for result in results:
            source = result["final"] if words == "names" else result["pretrained"]
            by_arm.setdefault(result["arm"], []).append(source["alignment"][words])
        for arm, gaps in by_arm.items():
            slots = list(gaps[0])
            values = np.array([[g[s] for s in slots] for g in gaps])
            axes.errorbar(range(len(slots)), values.mean(axis=0), yerr=values.std(axis=0) if len(gaps) > 1 else None,
                          marker="o", capsize=3, color=_COLORS.get(arm), label=ARMS[arm].label)
            axes.set_xticks(range(len(slots)))
            axes.set_xticklabels(slots, rotation=30, ha="right", fontsize=8)
        axes.axhline(0.0, color="black", linewidth=0.6)
        axes.set_ylabel("cos(translations) - cos(random pairs)")
        axes.set_title(f"alignment gap, {titles[words]}", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    _save(figure, os.path.join(out_dir, "alignment_gap.png"))
    files["alignment_gap"] = "alignment_gap.png"

    # 3. Knowledge and transfer accuracy per arm and language, chance marked.
    figure = _figure(11, 4)
    chance = {"knowledge": results[0]["final"]["knowledge"]["clone"]["chance"],
              "transfer": results[0]["final"]["transfer"]["clone"]["chance"]}
    arms = list(stats)
    for k, task in enumerate(("knowledge", "transfer")):
        axes = figure.add_subplot(1, 2, k + 1)
        width = 0.38
        for j, lang in enumerate(("english", "clone")):
            entries = [stats[a][f"{task}_{lang}"] for a in arms]
            axes.bar(np.arange(len(arms)) + (j - 0.5) * width, [100 * e["mean"] for e in entries], width,
                     yerr=[100 * e["std"] for e in entries], capsize=3,
                     color="tab:green" if lang == "english" else "tab:purple", alpha=0.8,
                     label="asked in English" if lang == "english" else "asked in the clone")
        axes.axhline(100 * chance[task], color="black", linestyle="--", linewidth=0.8,
                     label=f"chance ({100 * chance[task]:.1f}%)")
        axes.set_xticks(range(len(arms)))
        axes.set_xticklabels([ARMS[a].label for a in arms], fontsize=8)
        axes.set_ylabel("accuracy (%)")
        axes.set_title("knowledge learned in English only" if task == "knowledge"
                       else "skill shown in English only (zero-shot transfer)")
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3, axis="y")
    _save(figure, os.path.join(out_dir, "accuracy.png"))
    files["accuracy"] = "accuracy.png"
    return files


def _verdict(stats, comparisons: dict[str, dict[str, dict[str, Any]]], seeds: int) -> list[str]:
    lines = []
    for arm, comp in comparisons.items():
        label = ARMS[arm].label
        clone = comp["clone_ppl"]
        english = comp["english_ppl"]
        kn = comp["knowledge_clone"]
        tr = comp["transfer_clone"]
        lines.append(
            f"- **{label} vs joint training**: clone perplexity {clone['relative']:+.1%}, English perplexity "
            f"{english['relative']:+.1%}, knowledge asked in the clone {100 * kn['difference']:+.1f} points, "
            f"transfer to the clone {100 * tr['difference']:+.1f} points, held-out alignment gap "
            f"{comp['gap_heldout']['difference']:+.3f}."
        )
        if seeds > 1:
            beyond = [METRICS[m][0] for m, c in comp.items() if c["better"] and c["beyond_seed_range"]]
            worse = [METRICS[m][0] for m, c in comp.items() if not c["better"] and c["beyond_seed_range"]]
            lines.append(f"  Better with disjoint seed ranges: {', '.join(beyond) or 'none'}; worse with disjoint "
                         f"seed ranges: {', '.join(worse) or 'none'}.")
    return lines


def write_report(path: str, *, results: Sequence[dict[str, Any]], setting_stats: dict[str, Any],
                 budget: dict[str, Any], config: dict[str, Any], plots: dict[str, str], seconds: float,
                 command: str) -> dict[str, Any]:
    """Write ``report.md``; returns the aggregated numbers (also written to results.json by the caller)."""
    stats = aggregate(results)
    seeds = max(len(next(iter(s.values()))["values"]) for s in stats.values())
    comparisons = {arm: compare(stats, arm) for arm in stats if arm != "joint" and "joint" in stats}
    knowledge = setting_stats["knowledge"]
    transfer = setting_stats["transfer"]
    lines = [
        "# English-Clone demo: joint training vs PreAlign",
        "",
        f"`{command}` — {len(results)} runs ({len(stats)} arms × {seeds} seed{'s' if seeds > 1 else ''}); this "
        f"invocation took {seconds / 60:.1f} min on {os.cpu_count()} CPU core(s) "
        f"({platform.processor() or platform.machine()}; finished runs are reused, training times per run below).",
        "",
        "## Results",
        "",
        "| arm | " + " | ".join(label for label, _, _ in METRICS.values()) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for arm, entry in stats.items():
        lines.append(f"| {ARMS[arm].label} | " + " | ".join(_fmt(n, entry[n]) for n in METRICS) + " |")
    lines += [
        "",
        f"Perplexities after pretraining (phase 1) on the same "
        f"{results[0]['pretrained']['perplexity']['clone']['tokens']:,} held-out tokens in each language (the clone "
        f"eval text is the English one, token for token). Knowledge: {knowledge['facts']} facts about "
        f"{knowledge['entities']} invented entities, seen only in English (phase 2), asked in each language, chance "
        f"{knowledge['chance']:.1%}. Transfer: continuing month sequences, a skill shown only in English (phase 2), "
        f"{transfer['test_examples']} questions per language, chance {transfer['chance']:.1%}. Alignment gap after "
        f"pretraining: mean over layer slots of cos(word, translation) − cos(random word pairs); for the "
        f"names of the knowledge entities (dictionary entries unless the setting was built with "
        f"--no-knowledge-names-in-dictionary; their clone forms occur in no clone text), after phase 2. "
        f"\"clone→English\": knowledge asked in the clone, the English values ranked (recalled, but not "
        f"answered in the clone?)."
        + (" Values are mean ± sample standard deviation over seeds." if seeds > 1 else ""),
        "",
        "## Comparison with joint training",
        "",
        *(_verdict(stats, comparisons, seeds) or ["- (joint training was not among the arms)"]),
        "",
    ]
    if seeds == 1:
        lines += ["One seed per arm: the noise level is unknown, so small differences are not evidence. "
                  "`python -m prealign_experiments.english_clone --full` runs four arms × 3 seeds.", ""]
    lines += [
        f"![held-out perplexity per language]({plots['loss_curves']})",
        "",
        f"![alignment gap by layer]({plots['alignment_gap']})",
        "",
        f"![knowledge and transfer accuracy]({plots['accuracy']})",
        "",
        "## Per-seed values",
        "",
        "| arm | seed | " + " | ".join(label for label, _, _ in METRICS.values()) + " | tokens | train time |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    for result in results:
        values = metric_values(result)
        lines.append(f"| {ARMS[result['arm']].label} | {result['seed']} | "
                     + " | ".join(METRICS[n][2].format(values[n]) for n in METRICS)
                     + f" | {result['tokens']:,} | {(result.get('train_seconds') or 0) / 60:.1f} min |")
    weights = budget["weights"]
    lines += [
        "",
        "## Setting and budget",
        "",
        f"- Corpus: {setting_stats['corpus_documents']} State of the Union addresses "
        f"(shipped in `prealign_experiments/english_clone/data/`); training text {setting_stats['tokens']['en_train']:,} English + "
        f"{setting_stats['tokens']['clone_train']:,} clone tokens (different documents), held-out evaluation "
        f"{setting_stats['tokens']['en_eval']:,} tokens per language.",
        f"- Tokenizer: SentencePiece unigram, V = {config['setting_vocab_size']}; model vocabulary 2V (clone id = "
        f"English id + V, end-of-document shared).",
        f"- Dictionary: {setting_stats['dictionary_words']} word ↔ clone-word pairs; "
        f"{setting_stats['heldout_words']} further frequent words held out (never switched, never pre-aligned). "
        + (f"The {knowledge['entities']} invented entity names are among the dictionary entries: the pre-pass "
           f"aligns them and code-switching arms switch them in the English fact text (input only); their clone "
           f"forms occur in no clone text."
           if config.get("knowledge_names_in_dictionary") else
           "The invented entity names are not in the dictionary (--no-knowledge-names-in-dictionary)."),
        f"- Model: GPT, {config['num_layers']} layers, d={config['hidden_size']}, ffn {config['ffn_hidden_size']}, "
        f"{config['num_attention_heads']} heads, context {config['seq_length']}, untied embeddings (megatron-core "
        f"local spec, fp32, CPU).",
        f"- Budget per arm: {budget['tokens_per_arm']:,} tokens ({budget['tokens_per_iteration']:,} per iteration). "
        f"Phase 1 (pretraining): pre-pass arms {config['align_steps']} pre-pass steps × {config['align_pairs']} pairs "
        f"({budget['prepass_tokens']:,} tokens, mean word length {budget['mean_word_tokens']:.2f}) + "
        f"{config['train_iters']} iterations, the others {config['train_iters']} + "
        f"{budget['extra_iterations_without_prepass']} iterations; text mix English {weights['phase1']['en_train']:.3f}"
        f" / clone {weights['phase1']['clone_train']:.3f}. Phase 2 (English-only new material, fresh optimizer, "
        f"every arm): {config['phase2_iters']} iterations, knowledge facts {config['knowledge_share']:.0%} "
        f"(≈{budget['exposures']['knowledge_document']:.0f} exposures per fact), month sequences "
        f"{config['transfer_share']:.0%} (≈{budget['exposures']['transfer_epochs']:.1f} passes), the rest text "
        f"in the phase-1 proportion.",
        f"- Code-switching arms: input-only, ratio {config['codeswitch_ratio']}. Optimizer: lr {config['lr']} → "
        f"{config['min_lr']} cosine, warmup {config['lr_warmup_iters']}, weight decay {config['weight_decay']}, "
        f"clip {config['clip_grad']}; pre-pass lr {config['align_lr']}.",
        "",
        "## Reproduce",
        "",
        "```",
        command,
        f"python -m prealign_experiments.english_clone.evaluate --load {config['out']}/runs/<arm>-s<seed>/ckpt "
        f"--setting {config['out']}/setting"
        "   # after pretraining",
        f"python -m prealign_experiments.english_clone.evaluate --load {config['out']}/runs/<arm>-s<seed>/ckpt_phase2 "
        f"--setting "
        f"{config['out']}/setting   # after the English-only phase",
        "```",
        "",
        "Full numbers: `results.json`; per-run logs: `logs/`; each run's metrics: "
        "`runs/<arm>-s<seed>/metrics_phase{1,2}.jsonl`.",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"stats": stats, "comparisons": comparisons}
