"""Tier 2 (packaging): the compiled extension builds and imports from a regular, non-editable
install, the way `pip install .` on a cluster node lays it out; the English-Clone benchmark is
installed with its corpus."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_extension_imports_from_non_editable_install(tmp_path):
    target = tmp_path / "site"
    # --no-build-isolation: use this environment's pybind11/setuptools (no registry access needed).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, cwd=tmp_path)
    built = list((target / "megatron_prealign").glob("_C*.so"))
    assert built, "no compiled extension in the installed package"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import numpy as np, megatron_prealign, megatron_prealign._C as C;"
        "assert megatron_prealign.__file__.startswith(sys.argv[1]), megatron_prealign.__file__;"
        "print(C.__file__)"
    )
    # Run from an unrelated directory so the repository checkout cannot shadow the install.
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True, cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert out.strip().startswith(str(target))
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from prealign_experiments.english_clone.setting import DEFAULT_CORPUS, read_corpus;"
        "assert DEFAULT_CORPUS.startswith(sys.argv[1]), DEFAULT_CORPUS;"
        "print(len(read_corpus(DEFAULT_CORPUS)))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True, cwd=tmp_path,
                         capture_output=True, text=True).stdout
    assert out.strip() == "233"
