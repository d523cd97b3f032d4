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


VALID_LINE = {"muse": "x y\n", "tsv": "x\ty\n", "jsonl": '{"src_text": "x", "tgt_text": "y"}\n', "trans": "x :: y\n"}


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
    # The same line under skip_invalid is counted and reported, not raised (next to a valid line,
    # and with a share of invalid lines that tiny files need).
    p.write_text(content + VALID_LINE[fmt], encoding="utf-8")
    r = read_dictionary(p, format=fmt, skip_invalid=True, max_invalid_fraction=1.0)
    assert r.dropped_invalid == 1
    assert len(r.invalid_reports) == 1 and r.invalid_reports[0].startswith(str(p) + ":")


COMMENTED = {
    # Read as data, a two-word comment is the pair ("#", "comment"), a tabbed one the pair
    # ("# src", "tgt") or, in TSV, the first row that sets the column count.
    "muse": "# comment\n#English German\nhouse Haus\n  # indented note\n# src\ttgt\nriver Fluss\n",
    "tsv": "# src\ttgt\tnote\nsrc\ttgt\nhouse\tHaus\n# a note\nriver\tFluss\n",
    "jsonl": '# comment\n{"src_text": "house", "tgt_text": "Haus"}\n  # x y\n{"src_text": "river", "tgt_text": "Fluss"}\n',
    "trans": "# de :: en\nhouse :: Haus\n# comment here\nriver :: Fluss\n",
}


@pytest.mark.parametrize("fmt", sorted(COMMENTED))
def test_comment_lines_are_skipped_in_every_format(tmp_path, fmt):
    p = write(tmp_path, f"c.{fmt}", COMMENTED[fmt])
    for asked in (fmt, "auto"):
        r = read_dictionary(p, format=asked)
        assert r.format == fmt
        assert r.groups == [("house", "Haus"), ("river", "Fluss")]
        assert r.num_lines == 2 and r.dropped_invalid == 0


def test_a_hash_inside_a_line_is_a_word(tmp_path):
    p = write(tmp_path, "h.txt", "C# Cis\nsharp #\n")
    assert read_dictionary(p).groups == [("C#", "Cis"), ("sharp", "#")]


@pytest.mark.parametrize("content,detail", [
    ("", "the file has no data lines"),
    ("\n# only comments\n\n", "the file has no data lines"),
    ("OK OK\nja ja\n", r"in 2 data lines read as muse \(dropped: duplicate=0, identity=2"),
])
def test_a_dictionary_without_pairs_is_an_error_naming_the_file(tmp_path, content, detail):
    p = write(tmp_path, "empty.txt", content)
    with pytest.raises(LexiconError, match=rf"^{p}: no translation pairs.* {detail}"):
        read_dictionary(p)


def test_skip_invalid_refuses_a_file_read_in_the_wrong_format(tmp_path):
    # A three-column table in a .txt file is detected as MUSE: every row is "invalid".
    rows = "".join(f"word{i}\tWort{i}\tmot{i}\n" for i in range(200)) + "a b\n"
    p = write(tmp_path, "table.txt", rows)
    with pytest.raises(LexiconError) as info:
        read_dictionary(p, skip_invalid=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{p}: 200 of 201 data lines (99.5%) are invalid read as muse (detected from the file)")
    assert "more than --max-invalid-fraction 0.1 allows (first at line 1: expected 2 columns" in message
    assert message.endswith("the file reads as tsv with 1 invalid of its first 201 data lines: pass --format tsv")
    # Asked for explicitly, and with no format that fits.
    with pytest.raises(LexiconError, match=r"read as muse \(as asked\)"):
        read_dictionary(p, format="muse", skip_invalid=True)
    junk = write(tmp_path, "junk.txt", "".join(f"w{i} x y z\n" for i in range(9)) + "a b\n")
    with pytest.raises(LexiconError, match=r"9 of 10 data lines .*the file is none of the formats muse, tsv, jsonl, "
                                           r"trans, cedict \(--format\); fix its lines or, if these lines are really to be "
                                           r"skipped, raise --max-invalid-fraction$"):
        read_dictionary(junk, skip_invalid=True)
    assert read_dictionary(junk, skip_invalid=True, max_invalid_fraction=0.9).groups == [("a", "b")]


def test_skip_invalid_within_the_share_reads_on(tmp_path):
    lines = [f"w{i} v{i}" for i in range(9)] + ["broken line here"]
    p = write(tmp_path, "ok.txt", "\n".join(lines) + "\n")
    r = read_dictionary(p, skip_invalid=True)  # 1 in 10 is the default share, not above it
    assert len(r.groups) == 9 and r.dropped_invalid == 1
    with pytest.raises(LexiconError, match="1 of 10 data lines"):
        read_dictionary(p, skip_invalid=True, max_invalid_fraction=0.05)
    with pytest.raises(LexiconError, match=r"max_invalid_fraction must be in \[0, 1\], got 1.5"):
        read_dictionary(p, skip_invalid=True, max_invalid_fraction=1.5)


def test_json_lines_that_broke_the_reader(tmp_path):
    """Lines on which json.loads raises something else than a decode error, and a word no
    tokenizer can encode (the fuzz pass in test_lexicon_fuzz.py generates all three)."""
    cases = {
        "[" * 5000: "nested too deeply",
        "1" * 5000: "Exceeds the limit",
        '{"src_text": "\\ud800x", "tgt_text": "b"}': "word in column 1 has a lone surrogate U\\+D800",
    }
    for i, (line, message) in enumerate(cases.items()):
        p = write(tmp_path, f"j{i}.jsonl", line + "\n")
        with pytest.raises(LexiconError, match=rf"j{i}\.jsonl:1: .*{message}"):
            read_dictionary(p)


def test_invalid_utf8(tmp_path):
    p = write(tmp_path, "u.txt", b"house Haus\nbad \xff\xfe word\nriver Fluss\n")
    with pytest.raises(LexiconError, match=r"u\.txt:2: invalid UTF-8 \(byte 0xff at byte offset 4\)"):
        read_dictionary(p)
    r = read_dictionary(p, skip_invalid=True, max_invalid_fraction=0.5)
    assert r.groups == [("house", "Haus"), ("river", "Fluss")]
    assert r.dropped_invalid == 1


def test_skip_invalid_counts_every_bad_line(tmp_path):
    lines = ["house Haus", "broken", "a b c", "{", "river Fluss", "x\t", "water Wasser"]
    p = write(tmp_path, "mixed.txt", "\n".join(lines) + "\n")
    r = read_dictionary(p, format="muse", skip_invalid=True, max_invalid_fraction=0.6)
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
