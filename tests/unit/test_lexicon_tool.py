"""Tier 1: pure functions. `tools/build_lexicon.py` end to end: its `main(argv)` called directly
(the file is loaded with importlib; tools/ is not a package), and one run as a subprocess."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_prealign.lexicon import build_tokenizer, load_lexicon

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"
TOOL = REPO / "tools" / "build_lexicon.py"
SP = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", str(ASSETS / "tiny_sp.model")]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("build_lexicon_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_main_builds_a_loadable_lexicon_and_prints_a_summary(tool, tmp_path, capsys):
    out = tmp_path / "en_de.lex"
    rc = tool.main(["--dictionary", str(ASSETS / "dict_en_de.muse"), *SP, "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "entries:            18" in printed
    assert "unique sources:     8" in printed
    assert "multi-token share:" in printed
    assert "duplicate=1, identity=1, invalid=0" in printed
    lex = load_lexicon(out, build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model"))
    assert lex.mode == "word" and lex.num_entries == 18
    assert f"sha256:             {lex.sha256}" in printed


def test_main_options(tool, tmp_path, capsys, caplog):
    bad = tmp_path / "bad.jsonl"
    bad.write_text((ASSETS / "dict_multiway.jsonl").read_text(encoding="utf-8") + "{oops\n", encoding="utf-8")
    out = tmp_path / "m.lex"
    argv = ["--dictionary", str(bad), "--format", "jsonl", *SP, "--output", str(out)]
    assert tool.main(argv) == 2  # malformed line without --skip-invalid: error, no output
    assert not out.exists()
    assert "bad.jsonl:5: bad JSON" in caplog.text
    rc = tool.main(argv + ["--skip-invalid", "--case-variants", "--mode", "longest-match"])
    assert rc == 0
    assert "invalid=1" in capsys.readouterr().out
    lex = load_lexicon(out)
    assert lex.mode == "longest-match"
    texts = {lex.entry_text(i) for i in range(lex.num_entries)}
    assert {"Bank", "House", "银行"} <= texts


def test_main_rejects_unknown_choices(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--dictionary", "x", "--tokenizer-type", "Nope", "--tokenizer-model", "m", "--output", "o"])


def test_script_runs_as_a_subprocess(tmp_path):
    out = tmp_path / "t.lex"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--dictionary", str(ASSETS / "dict_en_de.tsv"), *SP, "--output", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "entries:            6" in proc.stdout
    lex = load_lexicon(out)
    tokens = np.asarray(build_tokenizer("SentencePieceTokenizer", ASSETS / "tiny_sp.model").encode("the old bridge"), np.int32)
    assert [lex.entry_text(i) for i in lex.scan(tokens)[2]] == ["bridge"]
