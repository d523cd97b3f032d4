"""Tier 1: pure functions. The dictd / FreeDict reader on the committed fixture (every part of
an entry that is dropped, each way of naming the files), the refusals of a dictd file read in
another format, and the real FreeDict English-Spanish dictionary when Debian's package is
installed."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from megatron_prealign.lexicon import LexiconError, build_lexicon, detect_format, format_summary, read_dictionary
from tests.unit.test_lexicon_tool import SP, config
from tests._tools import run_tool

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FIXTURE = ASSETS / "dict_en_es"
FREEDICT_ENG_SPA = Path("/usr/share/dictd/freedict-eng-spa")
needs_freedict = pytest.mark.skipif(
    not FREEDICT_ENG_SPA.with_suffix(".index").is_file(),
    reason="FreeDict English-Spanish not installed (Debian package dict-freedict-eng-spa)",
)

EXPECTED = [
    ("ago", "atrás"), ("arch", "arco"), ("bridge", "puente"), ("bridge", "pasarela"), ("go", "ir"),
    ("go", "irse"), ("green", "verde"), ("house", "casa"), ("house", "hogar"), ("house", "vivienda"),
    ("river", "río"), ("sleep", "dormir"), ("Spain", "España"), ("take", "tomar"), ("take", "coger"),
    ("the", "el"), ("the", "la"), ("the", "los"), ("the", "las"),
]


def copy_fixture(tmp_path: Path, stem: str = "d", plain: bool = False) -> Path:
    shutil.copy(f"{FIXTURE}.index", tmp_path / f"{stem}.index")
    if plain:
        (tmp_path / f"{stem}.dict").write_bytes(gzip.decompress(Path(f"{FIXTURE}.dict.dz").read_bytes()))
    else:
        shutil.copy(f"{FIXTURE}.dict.dz", tmp_path / f"{stem}.dict.dz")
    return tmp_path / stem


def test_fixture_reads_to_headword_translation_pairs():
    r = read_dictionary(f"{FIXTURE}.index")
    assert r.format == "dictd"
    # Pronunciations, <pos>, [domain] and (gender) notes, numbering, the example, the Synonym and
    # see: cross-references, the inflected forms in the headword line and the meta entries are gone;
    # the headword keeps the case of the entry ("Spain"), not the index's ("spain"); "went" indexes
    # the entry of "go", which is read once.
    assert r.groups == EXPECTED
    assert r.num_lines == 15
    # phrases: "echar una siesta", the headword "American Indian"; fragments: "archi‐", "hace...";
    # truncated: "take /teɪkkɛə/" and "the /ðəneðələndz/" (extend another entry's pronunciation),
    # "green /ɡriːnɡrəʊsə/" (twice the word's length).
    assert r.dropped == {"duplicate": 0, "identity": 0, "invalid": 0, "phrase": 2, "fragment": 2, "truncated": 3}


@pytest.mark.parametrize("name", ["d.index", "d.dict.dz", "d"])
@pytest.mark.parametrize("plain", [False, True])
def test_any_of_the_files_or_their_stem_names_the_dictionary(tmp_path, name, plain):
    copy_fixture(tmp_path, plain=plain)
    if plain and name == "d.dict.dz":
        name = "d.dict"
    path = tmp_path / name
    assert detect_format(path) == "dictd"
    assert read_dictionary(path).groups == EXPECTED
    assert read_dictionary(path, format="dictd").groups == EXPECTED


def test_auto_names_the_format_it_chose(caplog):
    with caplog.at_level("INFO", logger="megatron_prealign"):
        read_dictionary(f"{FIXTURE}.dict.dz")
    assert f"read {FIXTURE}.dict.dz as dictd (detected from the file)" in caplog.text


@pytest.mark.parametrize("fmt", ["muse", "tsv", "jsonl", "trans", "cedict"])
@pytest.mark.parametrize("name", ["d.index", "d.dict.dz"])
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_a_dictd_file_read_as_another_format_is_refused(tmp_path, fmt, name, skip_invalid):
    copy_fixture(tmp_path)
    path = tmp_path / name
    with pytest.raises(LexiconError) as info:
        read_dictionary(path, format=fmt, skip_invalid=skip_invalid, max_invalid_fraction=1.0)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: this is a dictd dictionary (.index + .dict.dz), not {fmt} (as asked): "
                              f"pass --format dictd")


def test_an_index_or_data_file_apart_from_its_pair_is_recognized(tmp_path):
    # The index alone, renamed: its meta entries give it away.
    lone = tmp_path / "words.txt"
    shutil.copy(f"{FIXTURE}.index", lone)
    with pytest.raises(LexiconError, match=r"words.txt: this is a dictd dictionary's index, not muse \(detected from "
                                           r"the file\): pass --format dictd with the .index and the .dict.dz"):
        read_dictionary(lone, skip_invalid=True, max_invalid_fraction=1.0)
    # The data file without its index, compressed or not.
    dz = tmp_path / "lonely.dict.dz"
    shutil.copy(f"{FIXTURE}.dict.dz", dz)
    with pytest.raises(LexiconError, match=r"lonely.dict.dz: this is a dictd dictionary's data file, not tsv \(as asked\)"):
        read_dictionary(dz, format="tsv", skip_invalid=True, max_invalid_fraction=1.0)
    with pytest.raises(LexiconError, match=rf"{dz}: a dictd dictionary is .*lonely.index with .*missing: .*lonely.index"):
        read_dictionary(dz, format="dictd")
    plain = tmp_path / "lonely.txt"
    plain.write_bytes(gzip.decompress(dz.read_bytes()))
    # Without the check, its "word /pronunciation/" lines would be read as MUSE pairs.
    with pytest.raises(LexiconError, match=r"lonely.txt: this is a dictd dictionary's data file, not muse"):
        read_dictionary(plain, skip_invalid=True, max_invalid_fraction=1.0)


def test_compressed_text_is_read_and_archives_and_binary_files_are_refused(tmp_path):
    import bz2
    import lzma
    import zipfile

    for name, compress in (("pairs.txt.gz", gzip.compress), ("pairs.txt.bz2", bz2.compress),
                           ("pairs.tsv.xz", lzma.compress)):
        path = tmp_path / name
        path.write_bytes(compress("house\tcasa\nriver\trío\n".encode()))
        assert detect_format(path) == ("tsv" if ".tsv" in name else "muse")
        assert read_dictionary(path).groups == [("house", "casa"), ("river", "río")]
    archive = tmp_path / "pairs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pairs.txt", "house casa\n")
    for skip_invalid in (False, True):
        with pytest.raises(LexiconError, match=r"pairs.zip: a zip archive, not a muse text dictionary \(detected from "
                                               r"the file\): unpack it first"):
            read_dictionary(archive, skip_invalid=skip_invalid, max_invalid_fraction=1.0)
        utf16 = tmp_path / "utf16.txt"
        utf16.write_bytes("house casa\n".encode("utf-16"))
        with pytest.raises(LexiconError, match=r"utf16.txt: a binary file, not a muse text dictionary \(detected from "
                                               r"the file\); a dictionary must be UTF-8 text"):
            read_dictionary(utf16, skip_invalid=skip_invalid, max_invalid_fraction=1.0)
        packed = tmp_path / "packed.gz"
        packed.write_bytes(gzip.compress(b"\x00\x01binary"))
        with pytest.raises(LexiconError, match=r"packed.gz: a gzip-compressed binary file, not a tsv text dictionary "
                                               r"\(as asked\)"):
            read_dictionary(packed, format="tsv", skip_invalid=skip_invalid, max_invalid_fraction=1.0)
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"house casa\n" * 1000)[:40])
    with pytest.raises(LexiconError, match=r"broken.txt.gz: a damaged compressed file"):
        read_dictionary(broken)


def test_damaged_index_lines_are_named_and_counted(tmp_path):
    stem = copy_fixture(tmp_path)
    index = Path(f"{stem}.index")
    lines = index.read_text(encoding="utf-8").splitlines()
    lines.insert(3, "broken line without tabs")
    lines.append("far\tZZZZ\tB")  # past the end of the data
    index.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=rf"^{index}:4: expected 'headword<TAB>offset<TAB>length'"):
        read_dictionary(stem)
    r = read_dictionary(stem, skip_invalid=True, max_invalid_fraction=0.2)
    assert r.groups == EXPECTED and r.dropped_invalid == 2
    assert "lies past the end of" in r.invalid_reports[1]
    with pytest.raises(LexiconError, match=r"2 of 17 entries \(11.8%\) are invalid read as dictd \(detected from the "
                                           r"file\), more than --max-invalid-fraction 0.1 allows"):
        read_dictionary(stem, skip_invalid=True)


def test_damaged_data_file(tmp_path):
    stem = copy_fixture(tmp_path)
    Path(f"{stem}.dict.dz").write_bytes(gzip.compress(b"x")[:12])
    with pytest.raises(LexiconError, match=rf"^{stem}.dict.dz: not a readable dictzip \(gzip\) file"):
        read_dictionary(stem)


def test_build_lexicon_from_dictd(tmp_path):
    out = tmp_path / "en_es.lex"
    lex = build_lexicon(config(f"{FIXTURE}.dict.dz", out))
    assert "phrase=2, fragment=2, truncated=3" in format_summary(lex.summary())
    proc = run_tool("build_lexicon", ["--dictionary", str(FIXTURE), "--format", "tsv", *SP,
                                      "--output", str(tmp_path / "t.lex")], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "t.lex").exists()
    assert "not tsv (as asked): pass --format dictd" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "ERROR" in line]) == 1


@needs_freedict
def test_real_freedict_english_spanish():
    r = read_dictionary(FREEDICT_ENG_SPA)
    assert r.format == "dictd" and r.dropped_invalid == 0
    assert r.num_lines > 5000 and len(r.groups) > 5000
    translations: dict[str, set[str]] = {}
    for group in r.groups:
        assert len(group) == 2
        for word in group:
            assert word == word.strip() and " " not in word
            assert not set(word) & set("/<>[]{}()"), group  # no pronunciation or note survives
        translations.setdefault(group[0], set()).add(group[1])
    assert "casa" in translations["house"]
    assert "España" in translations["Spain"]
    # "the /ðəneðələndz/ -> Holanda" is "the Netherlands" with its second word lost.
    assert "Holanda" not in translations["the"] and "el" in translations["the"]
    assert not any(w.lower().startswith("00") for w in translations)  # meta entries
    assert r.dropped_truncated > 300
