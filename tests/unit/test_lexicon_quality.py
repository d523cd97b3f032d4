"""Tier 1: pure functions. Lexicon quality controls: corpus match counts (checked against the
pure-Python reference scan), the stop-word / min-frequency / max-translations filters, the report
(coverage, top and never-matched entries, group sizes) and the tools/build_lexicon.py flags."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from megatron_prealign.lexicon import (
    BuildLexiconConfig,
    LexiconError,
    build_lexicon,
    build_lexicon_and_report,
    build_tokenizer,
    compile_lexicon,
    read_dictionary,
    reference_scan,
)
from megatron_prealign.lexicon import quality
from tests._tools import run_tool
from tests.unit.test_lexicon_tool import SP, config

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EN = ASSETS / "tiny_corpus.txt"
DICTIONARY = """the\tel
the\tla
the\tHolanda
house\tcasa
river\trío
old\tviejo
bridge\tpuente
bank\tbanco
bank\torilla
water\tagua
boat\tbarco
mountain\tmontaña
"""
SPANISH = """la casa del río es vieja
el agua del río pasa por la casa
el barco está en la orilla del río
la casa tiene una ventana y el perro duerme en la casa
"""


@pytest.fixture(scope="module")
def sp():
    return build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model")


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "en_es.txt"
    d.write_text(DICTIONARY, encoding="utf-8")
    es = tmp_path / "es.jsonl"
    es.write_text("".join(json.dumps({"text": line}) + "\n" for line in SPANISH.splitlines()), encoding="utf-8")
    return d, es


def reference_counts(lexicon, corpus):
    counts = np.zeros(lexicon.num_entries, np.int64)
    covered = np.zeros(lexicon.num_entries, np.int64)
    ends = np.concatenate([[0], np.cumsum(corpus.doc_lengths)])
    for a, b in zip(ends[:-1], ends[1:]):
        _, lengths, ids = reference_scan(corpus.tokens[a:b].tolist(), lexicon)
        np.add.at(counts, ids, 1)
        np.add.at(covered, ids, lengths)
    return counts, covered


def test_corpus_text_and_jsonl_compressed_or_not(tmp_path, sp, files):
    _, es = files
    text = tmp_path / "es.txt.gz"
    text.write_bytes(gzip.compress(("\n" + SPANISH).encode()))  # blank lines are no documents
    a, b = quality.tokenize_corpus(str(es), sp), quality.tokenize_corpus(str(text), sp)
    assert a.doc_lengths.tolist() == b.doc_lengths.tolist() and len(a.doc_lengths) == 4
    assert np.array_equal(a.tokens, b.tokens)
    assert a.tokens.tolist() == [t for line in SPANISH.splitlines() for t in sp.encode(line)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "la casa", "body": "y"}\n{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(LexiconError, match=rf'^{bad}:2: expected a JSON object with a string "text" \(--corpus-json-key\)'):
        quality.tokenize_corpus(str(bad), sp)
    assert quality.tokenize_corpus(str(bad), sp, json_key="body").num_tokens == len(sp.encode("y") + sp.encode("x"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=rf"^{empty}: no documents in --corpus file"):
        quality.tokenize_corpus(str(empty), sp)


def test_matches_equal_the_reference_scan(sp, files):
    d, es = files
    lex = compile_lexicon(read_dictionary(d), sp)
    for path in (str(EN), str(es)):
        corpus = quality.tokenize_corpus(path, sp)
        scan = quality.scan_corpus(lex, corpus)
        counts, covered = reference_counts(lex, corpus)
        assert scan.matches.tolist() == counts.tolist() and scan.covered.tolist() == covered.tolist()
        assert scan.tokens == corpus.num_tokens and scan.documents == len(corpus.doc_lengths)
    assert scan.matches.sum() > 0


def test_filters(sp, files, tmp_path):
    d, es = files
    result = read_dictionary(d)
    lex = compile_lexicon(result, sp)
    scans = [quality.scan_corpus(lex, quality.tokenize_corpus(p, sp)) for p in (str(EN), str(es))]
    freq = quality.word_frequencies(result, lex, sp, scans)
    # Spot checks against plain word counts of the texts ("the" only lower case, as the scan sees it).
    words = (EN.read_text(encoding="utf-8") + SPANISH).replace(",", " ").replace(".", " ").split()
    for w in ("the", "river", "casa", "la", "orilla", "Holanda"):
        assert freq[w] == words.count(w), w
    assert freq["Holanda"] == 0 and freq["the"] > freq["river"] > 0

    # max_translations: the corpus picks el and la over Holanda; without one, the first listed.
    filtered, outcome = quality.filter_dictionary(result, freq, max_translations=2)
    the = [g[1] for g in filtered.groups if g[0] == "the"]
    assert the == ["el", "la"] and outcome.dropped_groups == {"max_translations": 1}
    assert filtered.dropped["max_translations"] == 1 and "max_translations" not in result.dropped
    assert [g[1] for g in quality.filter_dictionary(result, None, max_translations=1)[0].groups
            if g[0] in ("the", "bank")] == ["el", "banco"]

    # stopwords_top_k: the most matched word of each side.
    filtered, outcome = quality.filter_dictionary(result, freq, stopwords_top_k=1)
    top_target = max((w for g in result.groups for w in g[1:]), key=lambda w: freq[w])
    assert outcome.stopwords == {"source": [("the", freq["the"])], "target": [(top_target, freq[top_target])]}
    assert all(g[0] != "the" and top_target not in g for g in filtered.groups)

    # min_frequency: words the corpus never (or rarely) shows go, on both sides; "mountain" (1
    # match) goes with its only translation "montaña" (none).
    filtered, _ = quality.filter_dictionary(result, freq, min_frequency=1)
    kept = {w for g in filtered.groups for w in g}
    assert freq["mountain"] == 1 and freq["montaña"] == 0 and not kept & {"Holanda", "montaña", "mountain"}
    assert all(freq[w] >= 1 for w in kept) and ("river", "río") in filtered.groups

    # A stop-word file, matched case-insensitively.
    stop = tmp_path / "stop.txt"
    stop.write_text("# English articles\nThe\n\nLA\n", encoding="utf-8")
    filtered, outcome = quality.filter_dictionary(result, None, stopwords=quality.read_stopwords(str(stop)))
    assert not {w for g in filtered.groups for w in g} & {"the", "la"}
    assert outcome.dropped_groups == {"stopword": 3}

    with pytest.raises(ValueError, match="need corpus frequencies"):
        quality.filter_dictionary(result, None, min_frequency=1)


def test_multiway_groups_keep_what_is_left(sp):
    from megatron_prealign.lexicon.dictionary import DictionaryReadResult

    r = DictionaryReadResult(path="m", format="jsonl", groups=[("bank", "banco", "banque"), ("the", "el")])
    filtered, outcome = quality.filter_dictionary(r, None, stopwords={"bank", "the"})
    assert filtered.groups == [("banco", "banque")] and outcome.dropped_groups == {"stopword": 1}


def test_report(sp, files, tmp_path):
    d, es = files
    out, report_path = tmp_path / "r.lex", tmp_path / "report.json"
    cfg = config(d, out, corpus=(str(EN), str(es)), report=str(report_path))
    lex, report = build_lexicon_and_report(cfg)
    assert json.loads(report_path.read_text(encoding="utf-8")) == report
    en, sp_es = report["corpus"]
    corpus = quality.tokenize_corpus(str(EN), sp)
    counts, covered = reference_counts(lex, corpus)
    assert en["tokens"] == corpus.num_tokens and en["covered_tokens"] == covered.sum()
    assert en["coverage"] == pytest.approx(covered.sum() / corpus.num_tokens)
    # English words are the source side, Spanish ones the target side (the English text quotes
    # some French: its "la" counts for the target side).
    assert sum(en["coverage_by_side"].values()) == pytest.approx(en["coverage"])
    la = next(i for i in range(lex.num_entries) if lex.entry_text(i) == "la")
    assert en["coverage_by_side"]["target"] == pytest.approx(covered[la] / corpus.num_tokens) and covered[la] > 0
    assert sp_es["coverage_by_side"]["target"] == pytest.approx(sp_es["coverage"]) and sp_es["coverage"] > 0.2
    top = report["top_entries"][0]
    assert top["entry"] == "the" and top["side"] == "source" and top["translations"] == ["el", "la", "Holanda"]
    assert report["top_entries"] == sorted(report["top_entries"], key=lambda e: -e["matches"])
    never = report["never_matched"]
    assert "Holanda" in never["examples"] and "montaña" in never["examples"]
    assert never["count"] == sum(1 for i in range(lex.num_entries) if counts[i] == 0
                                 and lex.entry_text(i) not in {"casa", "río", "la", "el", "agua", "barco", "orilla"})
    groups = report["groups"]
    # {the, el, la, Holanda} and {bank, banco, orilla}, the rest pairs.
    assert groups["size_histogram"] == {"2": 7, "3-4": 2} and groups["largest"] == 4
    assert groups["what_a_group_is"].startswith("a group is a connected component of the translation graph")
    text = quality.format_report(report)
    assert f"coverage:           {en['coverage']:.1%} of {en['tokens']} tokens in {EN}" in text
    assert "top entries:        the " in text and "never matched:" in text and "group sizes:        2: 7, 3-4: 2" in text


def test_report_without_corpus_has_groups_only(tmp_path, files):
    d, _ = files
    _, report = build_lexicon_and_report(config(d, tmp_path / "x.lex", report=str(tmp_path / "x.json")))
    assert report["corpus"] == [] and "top_entries" not in report and report["groups"]["count"] == 9
    assert build_lexicon_and_report(config(d, tmp_path / "y.lex"))[1] is None


def test_config_checks(files, tmp_path):
    d, es = files
    with pytest.raises(ValueError, match="--stopwords-top-k counts matches in a corpus: give it with --corpus FILE"):
        config(d, tmp_path / "o.lex", stopwords_top_k=5)
    with pytest.raises(ValueError, match="--max-translations must be an integer >= 0, got -1"):
        config(d, tmp_path / "o.lex", max_translations=-1)
    # Filters that leave nothing: an error naming the dictionary, and no .lex.
    out = tmp_path / "none.lex"
    with pytest.raises(LexiconError, match=rf"^{d}: the filters left no translation pair \(dropped: min_frequency=12\)"):
        build_lexicon(config(d, out, corpus=(str(es),), min_frequency=1000))
    assert not out.exists()


def test_tool_flags(files, tmp_path):
    d, es = files
    out, report = tmp_path / "t.lex", tmp_path / "t.json"
    proc = run_tool("build_lexicon", ["--dictionary", str(d), *SP, "--output", str(out), "--corpus", str(EN), str(es),
                                      "--stopwords-top-k", "1", "--max-translations", "2", "--report", str(report)],
                    timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stopword=" in proc.stdout and "stop-words (source): the " in proc.stdout
    assert "coverage:" in proc.stdout and "a group is a connected component" in proc.stdout
    assert json.loads(report.read_text(encoding="utf-8"))["filters"]["top_k_stopwords"]["source"][0][0] == "the"
    proc = run_tool("build_lexicon", ["--dictionary", str(d), *SP, "--output", str(tmp_path / "u.lex"),
                                      "--min-frequency", "2"], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "--min-frequency counts matches in a corpus" in proc.stderr
