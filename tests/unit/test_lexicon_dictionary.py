"""Tier 1: pure functions. Dictionary parsers: every format, every error message, skip-invalid
counting, duplicate / identity drops, multi-way groups."""
from __future__ import annotations

from pathlib import Path

import pytest

from megatron_prealign.lexicon import LexiconError, detect_format, read_dictionary

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return p


def test_muse_pairs_space_and_tab_with_drops():
    r = read_dictionary(ASSETS / "dict_en_de.muse")
    assert r.format == "muse"
    assert r.groups == [
        ("house", "Haus"),
        ("water", "Wasser"),
        ("bread", "Brot"),
        ("house", "Heim"),
        ("bank", "Ufer"),
        ("bank", "Bank"),
        ("book", "Buch"),
        ("window", "Fenster"),
        ("river", "Fluss"),
        ("ice cream", "Eiscreme"),  # tab-separated line may contain a space
    ]
    assert r.dropped_duplicate == 1  # second "house Haus"
    assert r.dropped_identity == 1  # "OK OK"
    assert r.num_lines == 12  # blank line not counted
    assert r.num_sources == 8
    assert r.dropped == {"duplicate": 1, "identity": 1, "invalid": 0, "phrase": 0}


def test_tsv_with_header_and_without(tmp_path):
    r = read_dictionary(ASSETS / "dict_en_de.tsv")
    assert r.format == "tsv"
    assert r.groups == [("house", "Haus"), ("river", "Fluss"), ("bridge", "Brücke")]
    assert r.num_lines == 3
    p = write(tmp_path, "nohdr.tsv", "house\tHaus\tmaison\nriver\tFluss\trivière\n")
    r = read_dictionary(p)
    assert r.groups == [("house", "Haus", "maison"), ("river", "Fluss", "rivière")]


def test_tsv_column_count_must_match_first_row(tmp_path):
    p = write(tmp_path, "d.tsv", "src\ttgt\nhouse\tHaus\nriver\tFluss\textra\n")
    with pytest.raises(LexiconError, match=r"d\.tsv:3: expected 2 tab-separated columns \(as in the first row\), got 3"):
        read_dictionary(p)
    p = write(tmp_path, "one.tsv", "house\n")
    with pytest.raises(LexiconError, match=r"one\.tsv:1: expected at least 2 tab-separated columns, got 1"):
        read_dictionary(p)


def test_jsonl_one_to_one_and_multiway():
    r = read_dictionary(ASSETS / "dict_pairs.jsonl")
    assert r.format == "jsonl"
    assert r.groups == [("house", "maison"), ("bread", "pain"), ("milk", "lait")]
    r = read_dictionary(ASSETS / "dict_multiway.jsonl")
    assert r.groups[0] == ("bank", "银行", "banque")
    assert len(r.groups) == 4 and all(len(g) == 3 for g in r.groups)


def test_jsonl_multiway_list_and_repeated_members(tmp_path):
    p = write(
        tmp_path,
        "m.jsonl",
        '{"words": ["a", "b", "c"]}\n{"words": "x $ x $ y"}\n{"words": "z $ z"}\n',
    )
    r = read_dictionary(p)
    assert r.groups == [("a", "b", "c"), ("x", "y")]
    assert r.dropped_identity == 1


def test_trans_format():
    r = read_dictionary(ASSETS / "dict_de_en.trans")
    assert r.format == "trans"
    assert r.groups == [
        ("Haus", "house"),
        ("Haus", "home"),
        ("Heim", "house"),
        ("Heim", "home"),
        ("Häuser", "houses"),
        ("Brücke", "bridge"),
        ("Fluss", "river"),
        ("Fluss", "stream"),
    ]
    assert r.dropped_phrase == 2  # "guten Morgen" / "good morning"


@pytest.mark.parametrize(
    "name,content,fmt,message",
    [
        ("a.txt", "house Haus\nhouse\n", "muse", r"a\.txt:2: expected 2 columns \(source, target\), got 1"),
        ("b.txt", "house Haus extra\n", "muse", r"b\.txt:1: expected 2 columns \(source, target\), got 3"),
        ("c.txt", "house\t \n", "muse", r"c\.txt:1: empty word in column 2"),
        ("d.tsv", "\thaus\n", "tsv", r"d\.tsv:1: empty word in column 1"),
        ("e.jsonl", '{"src_text": "a", "tgt_text": "b"}\n{"src_text": "a",\n', "jsonl", r"e\.jsonl:2: bad JSON: "),
        ("f.jsonl", "[1, 2]\n", "jsonl", r"f\.jsonl:1: expected a JSON object, got list"),
        ("g.jsonl", '{"foo": 1}\n', "jsonl", r'g\.jsonl:1: expected keys "src_text" and "tgt_text", or "words"'),
        ("h.jsonl", '{"src_text": "a", "tgt_text": 3}\n', "jsonl", r'h\.jsonl:1: "tgt_text" must be a string, got int'),
        ("i.jsonl", '{"src_text": "a"}\n', "jsonl", r'i\.jsonl:1: "tgt_text" must be a string, got NoneType'),
        ("j.jsonl", '{"words": "solo"}\n', "jsonl", r'j\.jsonl:1: "words" needs at least 2 members'),
        ("k.jsonl", '{"words": 5}\n', "jsonl", r'k\.jsonl:1: "words" must be a string'),
        ("l.jsonl", '{"words": "a $  $ b"}\n', "jsonl", r"l\.jsonl:1: empty word in column 2"),
        ("m.trans", "Haus :: house :: home\n", "trans", r'm\.trans:1: expected one " :: " separating the two languages, got 2'),
    ],
)
def test_error_messages_name_file_and_line(tmp_path, name, content, fmt, message):
    p = write(tmp_path, name, content)
    with pytest.raises(LexiconError, match=message):
        read_dictionary(p, format=fmt)
    # The same line under skip_invalid is counted and reported, not raised.
    r = read_dictionary(p, format=fmt, skip_invalid=True)
    assert r.dropped_invalid == 1
    assert len(r.invalid_reports) == 1 and r.invalid_reports[0].startswith(str(p) + ":")


def test_invalid_utf8(tmp_path):
    p = write(tmp_path, "u.txt", b"house Haus\nbad \xff\xfe word\nriver Fluss\n")
    with pytest.raises(LexiconError, match=r"u\.txt:2: invalid UTF-8 \(byte 0xff at byte offset 4\)"):
        read_dictionary(p)
    r = read_dictionary(p, skip_invalid=True)
    assert r.groups == [("house", "Haus"), ("river", "Fluss")]
    assert r.dropped_invalid == 1


def test_skip_invalid_counts_every_bad_line(tmp_path):
    lines = ["house Haus", "broken", "a b c", "{", "river Fluss", "x\t", "water Wasser"]
    p = write(tmp_path, "mixed.txt", "\n".join(lines) + "\n")
    r = read_dictionary(p, format="muse", skip_invalid=True)
    assert r.groups == [("house", "Haus"), ("river", "Fluss"), ("water", "Wasser")]
    assert r.dropped_invalid == 4
    assert [rep.split(":")[-2] for rep in r.invalid_reports] == ["2", "3", "4", "6"]
    assert r.num_lines == 3


def test_bom_and_crlf_are_tolerated(tmp_path):
    p = write(tmp_path, "bom.txt", "\ufeffhouse Haus\r\nriver Fluss\r\n")
    assert read_dictionary(p).groups == [("house", "Haus"), ("river", "Fluss")]


def test_detect_format(tmp_path):
    assert detect_format(write(tmp_path, "x.jsonl", "")) == "jsonl"
    assert detect_format(write(tmp_path, "x.tsv", "")) == "tsv"
    assert detect_format(write(tmp_path, "x.dict", '{"words": "a $ b"}\n')) == "jsonl"
    assert detect_format(write(tmp_path, "y.dict", "# c :: d\nHaus :: house\n")) == "trans"
    assert detect_format(write(tmp_path, "z.dict", "house Haus\n")) == "muse"


def test_unknown_format_rejected():
    with pytest.raises(LexiconError, match="unknown dictionary format 'csv'"):
        read_dictionary(ASSETS / "dict_en_de.muse", format="csv")
