"""Tier 1: pure functions. `megatron_prealign.lexicon.build_lexicon` end to end (dictionary file
-> saved `.lex` and its summary), and its command line tools/build_lexicon.py run as a
subprocess."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megatron_prealign.lexicon import (
    BuildLexiconConfig,
    LexiconError,
    build_lexicon,
    build_tokenizer,
    format_summary,
    load_lexicon,
)
from tests._tools import run_tool

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"
SP = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(ASSETS / "tiny_sp.model")]


def config(dictionary, output, **overrides) -> BuildLexiconConfig:
    return BuildLexiconConfig(dictionary=str(dictionary), output=str(output), tokenizer_type="SentencePieceTokenizer",
                              tokenizer_model=str(ASSETS / "tiny_sp.model"), **overrides)


def test_build_writes_a_loadable_lexicon_and_summarizes_it(tmp_path):
    out = tmp_path / "en_de.lex"
    built = build_lexicon(config(ASSETS / "dict_en_de.muse", out))
    printed = format_summary(built.summary())
    assert "entries:            18" in printed
    assert "unique sources:     8" in printed
    assert "multi-token share:" in printed
    assert "duplicate=1, identity=1, invalid=0" in printed
    lex = load_lexicon(out, build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model"))
    assert lex.mode == "word" and lex.num_entries == 18
    assert f"sha256:             {lex.sha256}" in printed


def test_build_options(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text((ASSETS / "dict_multiway.jsonl").read_text(encoding="utf-8") + "{oops\n", encoding="utf-8")
    out = tmp_path / "m.lex"
    with pytest.raises(LexiconError, match="bad.jsonl:5: bad JSON"):  # malformed line without skip_invalid
        build_lexicon(config(bad, out, format="jsonl"))
    assert not out.exists()
    built = build_lexicon(config(bad, out, format="jsonl", skip_invalid=True, max_invalid_fraction=0.2,
                                 case_variants=True, mode="longest-match"))
    assert "invalid=1" in format_summary(built.summary())
    lex = load_lexicon(out)
    assert lex.mode == "longest-match"
    texts = {lex.entry_text(i) for i in range(lex.num_entries)}
    assert {"Bank", "House", "银行"} <= texts


def test_config_rejects_unknown_choices(tmp_path):
    for field, flag in (("tokenizer_type", "--tokenizer-type"), ("format", "--format"), ("mode", "--mode")):
        values = {"dictionary": "x", "output": "o", "tokenizer_type": "SentencePieceTokenizer", "tokenizer_model": "m"}
        with pytest.raises(ValueError, match=flag):
            BuildLexiconConfig(**{**values, field: "Nope"})


def test_script_runs_as_a_subprocess(tmp_path):
    out = tmp_path / "t.lex"
    proc = run_tool("build_lexicon", ["--dictionary", str(ASSETS / "dict_en_de.tsv"), *SP, "--output", str(out)],
                    timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "entries:            6" in proc.stdout
    lex = load_lexicon(out)
    tokens = np.asarray(build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model").encode("the old bridge"), np.int32)
    assert [lex.entry_text(i) for i in lex.scan(tokens)[2]] == ["bridge"]
    # Errors: a one-line message and exit code 2 (bad dictionary line), argparse's 2 (bad choice).
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src_text": "a", "tgt_text": "b"}\n{oops\n', encoding="utf-8")
    proc = run_tool("build_lexicon", ["--dictionary", str(bad), *SP, "--output", str(tmp_path / "b.lex")],
                    timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "bad.jsonl:2: bad JSON" in proc.stderr and not proc.stdout
    proc = run_tool("build_lexicon", ["--dictionary", "x", "--tokenizer-type", "Nope", "--tokenizer-model", "m",
                                      "--output", "o"], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'Nope'" in proc.stderr


def test_a_dictionary_without_pairs_builds_nothing(tmp_path):
    out = tmp_path / "e.lex"
    for content in ("", "# header only\n", "OK OK\n"):
        empty = tmp_path / "empty.txt"
        empty.write_text(content, encoding="utf-8")
        with pytest.raises(LexiconError, match=rf"^{empty}: no translation pairs"):
            build_lexicon(config(empty, out))
        assert not out.exists()
    proc = run_tool("build_lexicon", ["--dictionary", str(empty), *SP, "--output", str(out)], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and not proc.stdout and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and f"{empty}: no translation pairs" in proc.stderr


def test_skip_invalid_on_a_file_in_another_format_fails_with_the_fix(tmp_path):
    table = tmp_path / "table.txt"
    table.write_text("".join(f"house{i}\tHaus{i}\tmaison{i}\n" for i in range(30)) + "river Fluss\n", encoding="utf-8")
    out = tmp_path / "t.lex"
    args = ["--dictionary", str(table), *SP, "--output", str(out), "--skip-invalid"]
    proc = run_tool("build_lexicon", args, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and not proc.stdout and not out.exists()
    line, = proc.stderr.strip().splitlines()
    assert f"{table}: 30 of 31 data lines (96.8%) are invalid read as muse (detected from the file)" in line
    assert line.endswith("pass --format tsv")
    # The suggested fix works; so does accepting the share, and a share outside [0, 1] is refused.
    assert build_lexicon(config(table, out, format="tsv", skip_invalid=True)).summary()["dropped"]["invalid"] == 1
    proc = run_tool("build_lexicon", [*args, "--max-invalid-fraction", "1"], timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and "invalid=30" in proc.stdout
    proc = run_tool("build_lexicon", [*args, "--max-invalid-fraction", "1.5"], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "--max-invalid-fraction must be in [0, 1], got 1.5" in proc.stderr
