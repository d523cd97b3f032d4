"""The English–Spanish Bible benchmark: the SWORD zText reader (on a module written here, and on
Debian's modules when installed), the dictionary split, the setting, the report, and (slow) the
whole benchmark in its --quick size on synthetic modules.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from prealign_experiments.bible_pair.sword import (
    DEBIAN_PACKAGES,
    KJV_BOOKS,
    ZTextError,
    module_conf,
    osis_to_text,
    read_ztext,
)

REPO = Path(__file__).resolve().parents[2]
NUM_VERSES = 31102

ENGLISH = "the man saw a house and the woman gave bread to the child in the city".split()
TO_SPANISH = {"the": "el", "man": "hombre", "saw": "vio", "a": "una", "house": "casa", "and": "y",
              "woman": "mujer", "gave": "dio", "bread": "pan", "to": "al", "child": "niño", "in": "en",
              "city": "ciudad"}


def write_ztext(root: Path, name: str, verse_texts: list[str], *, versification: str = "KJV") -> None:
    """A zText module in SWORD's layout (KJV slots, one compressed block per book) at `root`."""
    data_path = f"modules/texts/ztext/{name.lower()}/"
    (root / "mods.d").mkdir(parents=True, exist_ok=True)
    (root / "mods.d" / f"{name.lower()}.conf").write_text(
        f"[{name}]\nDataPath=./{data_path}\nModDrv=zText\nCompressType=ZIP\nBlockType=BOOK\n"
        f"Versification={versification}\nSourceType=OSIS\nEncoding=UTF-8\n")
    directory = root / data_path
    directory.mkdir(parents=True, exist_ok=True)
    k = 0
    for testament, books in (("ot", KJV_BOOKS[:39]), ("nt", KJV_BOOKS[39:])):
        slots = [(0, 0, 0), (0, 0, 0)]
        blocks, compressed = [], b""
        for number, (book, chapters) in enumerate(books):
            text = b""
            slots.append((number, 0, 0))  # book heading
            for chapter, count in enumerate(chapters, start=1):
                heading = f'<chapter osisID="{book}.{chapter}"/>'.encode()
                slots.append((number, len(text), len(heading)))
                text += heading
                for _ in range(count):
                    markup = f'<w lemma="x">{verse_texts[k]}</w><note>dropped</note>'.encode()
                    slots.append((number, len(text), len(markup)))
                    text += markup
                    k += 1
            block = zlib.compress(text)
            blocks.append((len(compressed), len(block), len(text)))
            compressed += block
        (directory / f"{testament}.bzs").write_bytes(b"".join(struct.pack("<III", *b) for b in blocks))
        (directory / f"{testament}.bzv").write_bytes(b"".join(struct.pack("<IIH", *s) for s in slots))
        (directory / f"{testament}.bzz").write_bytes(compressed)


def synthetic_bibles(root: Path, seed: int = 0) -> Path:
    """Parallel English / Spanish modules of word-salad verses from a 14-word vocabulary, and a
    TSV dictionary of its words; returns the dictionary path."""
    rng = np.random.default_rng(seed)
    english = [" ".join(rng.choice(ENGLISH, size=8)) + "." for _ in range(NUM_VERSES)]
    spanish = [" ".join(TO_SPANISH[w.rstrip(".")] for w in verse.split()) + "." for verse in english]
    write_ztext(root, "engKJV2006eb", english)
    write_ztext(root, "spaRV1909eb", spanish)
    dictionary = root / "dict.tsv"
    dictionary.write_text("".join(f"{en}\t{es}\n" for en, es in TO_SPANISH.items()))
    return dictionary


@pytest.fixture(scope="module")
def bibles(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sword")
    return root, synthetic_bibles(root)


def test_kjv_versification_table():
    assert len(KJV_BOOKS) == 66 and KJV_BOOKS[0][0] == "Gen" and KJV_BOOKS[-1][0] == "Rev"
    assert sum(len(c) for _, c in KJV_BOOKS) == 1189
    assert sum(sum(c) for _, c in KJV_BOOKS) == NUM_VERSES
    assert dict(KJV_BOOKS)["Ps"][118] == 176


def test_osis_to_text_keeps_words_drops_markup():
    markup = ('<div type="x-p"/>¶ <w lemma="strong:H0430">God</w> <transChange type="added">was</transChange> '
              '<note type="study">a note</note>good &amp; <title type="psalm">A Psalm</title>right ,')
    assert osis_to_text(markup) == "God was good & right,"


def test_reader_on_a_written_module(bibles):
    root, _ = bibles
    verses = read_ztext("engKJV2006eb", root)
    assert len(verses) == NUM_VERSES
    assert verses[0].ref == "Gen.1.1" and verses[-1].ref == "Rev.22.21"
    assert all(v.text and "dropped" not in v.text for v in verses[:100])
    spanish = read_ztext("spaRV1909eb", root)
    assert spanish[5].text.split()[0] == TO_SPANISH[verses[5].text.split()[0]]


def test_reader_errors_name_the_fix(tmp_path, bibles):
    with pytest.raises(ZTextError, match="sword-text-kjv"):
        read_ztext("engKJV2006eb", tmp_path)
    write_ztext(tmp_path, "Odd", ["x"] * NUM_VERSES, versification="Vulg")
    with pytest.raises(ZTextError, match="Versification=Vulg"):
        read_ztext("Odd", tmp_path)
    root, _ = bibles
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    bzv = copy / "modules/texts/ztext/engkjv2006eb/nt.bzv"
    bzv.write_bytes(bzv.read_bytes()[:-10])
    with pytest.raises(ZTextError, match="not in KJV versification"):
        read_ztext("engKJV2006eb", copy)


def _installed(module: str) -> bool:
    try:
        module_conf(module)
    except ZTextError:
        return False
    return True


@pytest.mark.skipif(not all(_installed(m) for m in DEBIAN_PACKAGES),
                    reason="Debian packages sword-text-kjv and sword-text-sparv are not installed")
def test_reader_on_the_debian_modules():
    english = read_ztext("engKJV2006eb")
    spanish = read_ztext("spaRV1909eb")
    assert len(english) == len(spanish) == NUM_VERSES
    assert english[0].text == "In the beginning God created the heaven and the earth."
    assert spanish[0].text == "EN el principio crió Dios los cielos y la tierra."
    john = next(i for i, v in enumerate(english) if v.ref == "John.3.16")
    assert english[john].text.startswith("For God so loved the world")
    assert spanish[john].ref == "John.3.16" and "Dios" in spanish[john].text
    if shutil.which("diatheke"):  # libsword's own rendering, words only
        out = subprocess.run(["diatheke", "-b", "engKJV2006eb", "-o", "", "-f", "plain", "-k", "Ps 23:1"],
                             capture_output=True, text=True, timeout=60).stdout
        psalm = next(v for v in english if v.ref == "Ps.23.1").text
        assert "".join(c for c in psalm if c.isalpha()) in "".join(c for c in out if c.isalpha())


def test_split_dictionary_keeps_heldout_words_out_of_training():
    from prealign_experiments.bible_pair.setting import split_dictionary

    groups = [("house", "casa", "hogar"), ("home", "casa"), ("man", "hombre"), ("woman", "mujer"),
              ("bread", "pan"), ("city", "ciudad"), ("ghost", "fantasma")]
    english = Counter({"house": 9, "home": 9, "man": 9, "woman": 9, "bread": 9, "city": 9, "ghost": 1})
    spanish = Counter({"casa": 2, "hombre": 2, "mujer": 1, "pan": 1, "ciudad": 1, "fantasma": 3})
    for seed in range(8):
        train, heldout, counts = split_dictionary(groups, english, spanish, heldout_share=0.3, min_count=5,
                                                  seed=seed)
        held_en = {en for en, _ in heldout}
        held_es = {es for g in groups if g[0] in held_en for es in g[1:]}
        assert held_en and counts["attested_english_words"] == 6  # ghost is too rare
        assert not any(en in held_en or es in held_es for en, es in train)
        assert all(spanish[es] for _, es in heldout)  # held-out pairs are in the text
        assert ("ghost", "fantasma") in train


def test_setting_from_written_modules(tmp_path, bibles):
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon
    from prealign_experiments.bible_pair.setting import BiblePairConfig, build_setting, existing_setting

    root, dictionary = bibles
    cfg = BiblePairConfig(output_dir=str(tmp_path / "setting"), sword_root=str(root), dictionary=str(dictionary),
                          dictionary_format="tsv", vocab_size=50, retrieval_pairs=50, heldout_share=0.2,
                          stopwords_top_k=1, min_frequency=1, max_translations=3)
    setting = build_setting(cfg)
    stats = setting.stats
    assert stats["chapters"]["heldout"] == len(range(10, 1189, 20))
    assert 0.05 < stats["spanish_token_share"] < 0.2
    assert stats["quality"]["filters"]["stopwords_top_k"] == 1
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    train = load_lexicon(setting.path(setting.lexicon), tokenizer)
    heldout = load_lexicon(setting.path(setting.heldout_lexicon), tokenizer)
    train_words = {train.entry_text(i).lower() for i in range(train.num_entries)}
    heldout_words = {heldout.entry_text(i) for i in range(heldout.num_entries)}
    assert heldout_words and not heldout_words & train_words
    pairs = [json.loads(line) for line in open(setting.path(setting.parallel), encoding="utf-8")]
    assert len(pairs) == 50
    assert all(p["tgt"].split()[0] == TO_SPANISH[p["src"].split()[0]] for p in pairs)
    # Retrieval verses come from held-out chapters only (every 20th, offset 10), never trained on.
    chapter_index = {f"{book}.{c}": i for i, (book, c) in
                     enumerate((b, c) for b, counts in KJV_BOOKS for c in range(1, len(counts) + 1))}
    assert all(chapter_index[".".join(p["ref"].split(".")[:2])] % 20 == 10 for p in pairs)
    train_texts = {json.loads(line)["text"] for name in ("en_train", "es_train")
                   for line in open(setting.path(setting.texts[name]), encoding="utf-8")}
    assert not any(p["src"] in text or p["tgt"] in text for p in pairs[:10] for text in train_texts)
    assert existing_setting(cfg) is not None


def _synthetic_result(arm: str, seed: int, shift: float) -> dict:
    slots = ["embedding", "layer_1", "final_norm"]
    gap = {"embedding": 0.1 + shift, "layer_1": 0.2 + shift, "output_embedding": 0.05}
    return {"arm": arm, "seed": seed, "tokens": 1000, "train_seconds": 60.0, "prepass_seconds": 5.0,
            "curve": [{"iteration": 10, "tokens": 500, "english": 90.0, "spanish": 120.0},
                      {"iteration": 20, "tokens": 1000, "english": 80.0 - shift, "spanish": 100.0 - 10 * shift}],
            "final": {"perplexity": {"english": {"ppl": 80.0 - shift, "tokens": 512},
                                     "spanish": {"ppl": 100.0 - 10 * shift + seed % 3, "tokens": 512}},
                      "alignment": {"dictionary": gap, "heldout": {k: v / 2 for k, v in gap.items()},
                                    "words": {"dictionary": 40, "heldout": 10}},
                      "retrieval": {"src->tgt": {s: 0.05 + shift for s in slots}, "tgt->src": {s: 0.05 for s in slots},
                                    "chance": 0.01, "candidates": 100, "n": 500}}}


def test_report_states_only_effects_beyond_the_seed_spread(tmp_path):
    from prealign_experiments.bible_pair.report import aggregate, compare, metric_table, write_plots, write_report

    results = [_synthetic_result("joint", s, 0.0) for s in (1, 2, 3)]
    results += [_synthetic_result("prealign", s, 0.3 + 0.01 * s) for s in (1, 2, 3)]
    for r in results:
        r["same_iterations"] = r["final"]
    stats = aggregate(results)
    assert stats["joint"]["spanish_ppl"]["values"] == [101.0, 102.0, 100.0]
    comparison = compare(stats, metric_table(results[0]), "prealign")
    assert comparison["retrieval_best"]["beyond_seed_spread"] and comparison["retrieval_best"]["better"]
    assert not comparison["english_ppl"]["beyond_seed_spread"] or comparison["english_ppl"]["better"]
    plots = write_plots(results, str(tmp_path))
    assert set(plots) == {"loss_curves", "alignment_gap", "retrieval"}
    setting_stats = {"dictionary": {"format": "dictd", "dictionary_pairs": 10, "dictionary_english_words": 8,
                                    "heldout_english_words": 1, "attested_english_words": 5, "heldout_pairs": 1,
                                    "train_pairs": 8, "train_pairs_in_text": 6},
                     "lexicon": {"entries": 16, "summary": {"groups": 8, "largest_group": 2}},
                     "quality": {"filters": {"stopwords_top_k": 20, "min_frequency": 1, "max_translations": 3}},
                     "tokens": {"en_train": 900, "es_train": 100}, "spanish_token_share": 0.1,
                     "chapters": {"train": 10, "train_spanish": 1, "heldout": 1}}
    budget = {"tokens_per_arm": 1000, "tokens_per_iteration": 50, "prepass_tokens": 100, "mean_word_tokens": 2.0,
              "prepass_share": 0.1, "extra_iterations_without_prepass": 2, "epochs_of_training_text": 1.0}
    from prealign_experiments.bible_pair.config import BenchConfig

    config = {**BenchConfig().to_dict(), "setting": {"eval_every": 20, "vocab_size": 8000, "case_variants": True}}
    write_report(str(tmp_path / "report.md"), results=results, setting_stats=setting_stats, budget=budget,
                 config=config, plots=plots, seconds=60.0, command="python -m prealign_experiments.bible_pair")
    text = (tmp_path / "report.md").read_text()
    assert "EN→ES retrieval, best layer" in text and "beyond the seed spread" in text
    # Spanish ppl differs by 3 (beyond the seeds' spread of 1); English by 0.3 +- 0.01: both effects.
    effects = text.split("## Effects")[1].split("![")[0]
    assert "Spanish held-out ppl" in effects and "better" in effects
    assert "Equal pretraining iterations" in text


def test_cli_quick_and_validation():
    from prealign_experiments.bible_pair.__main__ import parse_config

    cfg = parse_config(["--quick"])
    assert cfg.out == "runs/bible-quick" and cfg.arms == ("joint", "prealign") and cfg.train_iters == 6
    assert parse_config([]).seeds == (1234, 2345, 3456) and len(parse_config([]).arms) == 4
    cfg = parse_config(["--quick", "--setting-args", "--spanish-share", "0.2"])
    assert cfg.setting_args[-2:] == ("--spanish-share", "0.2")
    with pytest.raises(SystemExit):
        parse_config(["--arms", "bogus"])


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path, bibles):
    root, dictionary = bibles
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "prealign_experiments.bible_pair", "--quick", "--out", str(out),
           "--setting-args", "--sword-root", str(root), "--dictionary", str(dictionary), "--dictionary-format", "tsv",
           "--vocab-size", "50", "--stopwords-top-k", "1", "--heldout-share", "0.3"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "| PreAlign |" in report and "| joint training |" in report
    results = json.loads((out / "results.json").read_text())
    assert {r["arm"] for r in results["runs"]} == {"joint", "prealign"}
    assert all("perplexity" in r["final"] and "alignment" in r["final"] for r in results["runs"])
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "reusing the finished run" in proc.stderr
