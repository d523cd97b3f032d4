"""Shared pytest fixtures, one marked section per area."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


# ============================================================================================
# tiers (docs/DESIGN.md §6): every test is marked with its folder's tier, so a contributor can run
# the cheap ones alone (`pytest -m unit`) while `make test` runs everything
# ============================================================================================

_TIER_MARKERS = {"unit": "unit", "distributed": "distributed", "tools": "tools", "packaging": "tools",
                 "slurm": "slurm", "experiments": "tools"}


def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parent
    for item in items:
        try:
            folder = Path(item.fspath).resolve().relative_to(root).parts[0]
        except ValueError:
            continue
        marker = _TIER_MARKERS.get(folder)
        if marker:
            item.add_marker(marker)


# ============================================================================================
# isolation
# (the CPU compatibility layer and process groups are per process; a test module that switches
# them on must not leak them into the next module)
# ============================================================================================

@pytest.fixture(autouse=True, scope="module")
def _isolate_process_state():
    yield
    import sys

    if "megatron_prealign.platform.cpu_compat" not in sys.modules:
        return  # nothing of ours ran in this process yet
    from megatron_prealign.distributed import destroy_distributed
    from megatron_prealign.platform import deactivate_cpu_compat

    destroy_distributed()
    deactivate_cpu_compat()


# ============================================================================================
# data fixtures
# (megatron_prealign/data, tools/preprocess_data.py: a tiny tokenizer, lexicon and token
# datasets with code-switch sidecars, all built offline from tests/assets)
# ============================================================================================

ASSETS = Path(__file__).resolve().parent / "assets"

# A small en-de dictionary over words of tests/assets/tiny_corpus.txt (written for these tests).
DATA_DICTIONARY = """\
house Haus
river Fluss
water Wasser
bank Ufer
bank Bank
window Fenster
money Geld
teacher Lehrerin
morning Morgen
boat Boot
town Stadt
children Kinder
book Buch
books Bücher
summer Sommer
ice Eis
day Tag
night Nacht
bread Brot
old alt
small klein
bridge Brücke
school Schule
sea Meer
ship Schiff
"""


@pytest.fixture(scope="session")
def data_tokenizer():
    """The checked-in tiny SentencePiece tokenizer (vocab 400, pad 3, eos 2)."""
    from megatron_prealign.lexicon.tokenizer import build_tokenizer

    return build_tokenizer("SentencePieceTokenizer", str(ASSETS / "tiny_sp.model"))


@pytest.fixture(scope="session")
def data_other_tokenizer_model(tmp_path_factory) -> str:
    """Another SentencePiece model of the same corpus (vocab 390): same kind of ids, another
    tokenizer, for data that must be refused as foreign."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("other_tokenizer")
    spm.SentencePieceTrainer.train(
        input=str(ASSETS / "tiny_corpus.txt"), model_prefix=str(root / "other"), vocab_size=390,
        model_type="unigram", character_coverage=1.0, byte_fallback=True, num_threads=1, minloglevel=2,
        normalization_rule_name="identity",
    )
    return str(root / "other.model")


@pytest.fixture(scope="session")
def data_lexicon_path(tmp_path_factory, data_tokenizer) -> str:
    """A compiled `.lex` of `DATA_DICTIONARY` for the tiny tokenizer."""
    from megatron_prealign.lexicon.dictionary import read_dictionary
    from megatron_prealign.lexicon.lexicon import compile_lexicon

    root = tmp_path_factory.mktemp("data_lexicon")
    dictionary = root / "en_de.muse"
    dictionary.write_text(DATA_DICTIONARY, encoding="utf-8")
    lexicon = compile_lexicon(read_dictionary(dictionary), data_tokenizer)
    path = root / "en_de.lex"
    lexicon.save(path)
    return str(path)


@pytest.fixture(scope="session")
def data_corpus_lines() -> list:
    """The non-empty lines of tests/assets/tiny_corpus.txt."""
    text = (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def data_write_corpus():
    """``write(prefix, texts, tokenizer, lexicon=None, append_eod=True) -> prefix``.

    Writes ``<prefix>.{bin,idx}`` (one sequence per text, uint16 like megatron's preprocessing
    for small vocabularies) and, with a lexicon, the code-switch sidecar from ``lexicon.scan``.
    """
    import os

    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from megatron_prealign.data.integrity import file_sha256
    from megatron_prealign.data.sidecar import SidecarWriter, sidecar_prefix

    def write(prefix, texts, tokenizer, lexicon=None, append_eod=True):
        prefix = str(prefix)
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=DType.optimal_dtype(tokenizer.vocab_size))
        writer = SidecarWriter(sidecar_prefix(prefix) + ".bin") if lexicon is not None else None
        lengths = []
        for text in texts:
            ids = tokenizer.encode(text) + ([tokenizer.eod] if append_eod else [])
            tokens = np.asarray(ids, dtype=np.int32)
            builder.add_document(tokens, [len(tokens)])
            lengths.append(len(tokens))
            if writer is not None:
                writer.add_document(*lexicon.scan(tokens))
        builder.finalize(prefix + ".idx")
        if writer is not None:
            writer.finalize(sidecar_prefix(prefix) + ".idx")
            writer.make_meta(
                np.asarray(lengths, dtype=np.int32),
                lexicon_sha256=lexicon.sha256,
                tokenizer_fingerprint=lexicon.tokenizer_fingerprint,
                token_bin_size=os.path.getsize(prefix + ".bin"),
                token_bin_sha256=file_sha256(prefix + ".bin"),
            ).write(sidecar_prefix(prefix) + ".json")
        return prefix

    return write


@pytest.fixture(scope="session")
def data_prefixes(tmp_path_factory, data_tokenizer, data_lexicon_path, data_corpus_lines, data_write_corpus):
    """Two token datasets with sidecars: ``a`` (all corpus lines, 3 times, shuffled) and ``b``
    (the English lines in pairs), for single-prefix and blended datasets."""
    from megatron_prealign.lexicon.lexicon import load_lexicon

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    root = tmp_path_factory.mktemp("data_corpus")
    rng = np.random.default_rng(0)
    lines = list(data_corpus_lines)
    texts_a = [lines[i] for i in rng.permutation(len(lines) * 3) % len(lines)]
    english = [line for line in lines if line.isascii()]
    texts_b = [" ".join(english[i : i + 2]) for i in range(0, len(english), 2)]
    a = data_write_corpus(root / "a_text_document", texts_a, data_tokenizer, lexicon)
    b = data_write_corpus(root / "b_text_document", texts_b, data_tokenizer, lexicon)
    return a, b
