"""Tier 1: one process. `megatron_prealign.data.preview` and tools/preview_codeswitch.py: samples
drawn through CodeSwitchGPTDataset, their text with the switched spans marked, seeded."""
from __future__ import annotations

import numpy as np
import pytest

from megatron_prealign.data.preview import PreviewConfig, format_preview, preview
from megatron_prealign.lexicon.lexicon import load_lexicon
from tests._tools import run_tool

SEQ = 48


def config(prefix, lexicon, tmp_path, **overrides) -> PreviewConfig:
    from tests.conftest import ASSETS

    values = dict(data_path=prefix, lexicon=lexicon, tokenizer_model=str(ASSETS / "tiny_sp.model"), seq_length=SEQ,
                  codeswitch_ratio=0.5, num_samples=6, data_cache_path=str(tmp_path / "cache"))
    return PreviewConfig(**{**values, **overrides})


def text(segments):
    return "".join(t for t, _ in segments)


def marked(segments):
    return [t.strip() for t, kind in segments if kind == "switched"]


def test_samples_show_the_datasets_own_switches(data_prefixes, data_lexicon_path, data_tokenizer, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    from megatron_prealign.data import CodeSwitchGPTDataset, CodeSwitchGPTDatasetConfig

    prefix = data_prefixes[0]
    samples = preview(config(prefix, data_lexicon_path, tmp_path))
    assert len(samples) == 6 and [s.index for s in samples] == sorted({s.index for s in samples})
    # The same dataset, built here as pretraining builds it: the preview's text is its samples'.
    ds_cfg = CodeSwitchGPTDatasetConfig(
        random_seed=1234, sequence_length=SEQ, blend=([prefix], None), split="1,0,0",
        path_to_cache=str(tmp_path / "cache2"), tokenizer=data_tokenizer, reset_position_ids=False,
        reset_attention_mask=False, eod_mask_loss=False, codeswitch_ratio=0.5, lexicon_path=data_lexicon_path)
    indexed = IndexedDataset(prefix)
    ds = CodeSwitchGPTDataset(indexed, prefix, np.arange(len(indexed), dtype=np.int32), None, Split.train, ds_cfg)
    lex = load_lexicon(data_lexicon_path, data_tokenizer)
    texts = {lex.entry_text(i): i for i in range(lex.num_entries)}
    switched_total = eods_seen = 0
    for s in samples:
        sample = ds[s.index]
        window, decisions = ds.switch_decisions(s.index)
        assert s.switched_words == sample["cs_switched_words"] and s.eligible_words == sample["cs_eligible_words"]
        assert text(s.original) == data_tokenizer.decode(window[:SEQ].tolist())
        shown = sample["tokens"].numpy()[: len(data_tokenizer.encode(text(s.switched))) + 8]
        assert data_tokenizer.decode(shown.tolist()).startswith(text(s.switched))
        # Each marked word is a dictionary entry and its switched counterpart one of its translations.
        pairs = list(zip(marked(s.original), marked(s.switched)))
        assert len(pairs) == len(marked(s.original)) == len(marked(s.switched))
        assert len(pairs) == sum(d.switched for d in decisions) == s.switched_words
        for word, translation in pairs:
            assert translation in {lex.entry_text(int(t)) for t in lex.translations(texts[word])}, (word, translation)
        switched_total += len(pairs)
        lines = format_preview(s).splitlines()
        assert lines[0] == f"sample {s.index}: {s.switched_words} of {s.eligible_words} dictionary words switched"
        assert lines[1].count("[") >= len(pairs) and lines[2].startswith("  switched: ")
        # Document ends are shown where the window holds the end-of-document token.
        eods = int((window[:SEQ] == data_tokenizer.eod).sum())
        assert [kind for _, kind in s.original].count("eod") == eods and lines[1].count(" ¶") == eods
        eods_seen += eods
    assert switched_total > 0 and eods_seen > 0


def test_seeded_and_ratio(data_prefixes, data_lexicon_path, tmp_path):
    prefix = data_prefixes[0]
    a = preview(config(prefix, data_lexicon_path, tmp_path))
    b = preview(config(prefix, data_lexicon_path, tmp_path, data_cache_path=None))
    assert [format_preview(s) for s in a] == [format_preview(s) for s in b]
    other = preview(config(prefix, data_lexicon_path, tmp_path, seed=7))
    assert [s.index for s in other] != [s.index for s in a]
    # Another switch seed: the same samples, other switches.
    c = preview(config(prefix, data_lexicon_path, tmp_path, codeswitch_seed=99))
    assert [s.index for s in c] == [s.index for s in a] and [s.switched for s in c] != [s.switched for s in a]
    none = preview(config(prefix, data_lexicon_path, tmp_path, codeswitch_ratio=0.0))
    assert all(not marked(s.original) and text(s.original) == text(s.switched) for s in none)
    every = preview(config(prefix, data_lexicon_path, tmp_path, codeswitch_ratio=1.0))
    assert all(s.switched_words == s.eligible_words for s in every)
    with pytest.raises(ValueError, match="--num-samples must be >= 1"):
        config(prefix, data_lexicon_path, tmp_path, num_samples=0)


def test_tool(data_prefixes, data_lexicon_path, tmp_path):
    from tests.conftest import ASSETS

    args = ["--lexicon", data_lexicon_path, "--tokenizer-model", str(ASSETS / "tiny_sp.model"), "--seq-length", "32",
            "--num-samples", "2", "--codeswitch-ratio", "1"]
    proc = run_tool("preview_codeswitch", ["--data-path", data_prefixes[0], *args], timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("  original: ") == 2 and proc.stdout.count("  switched: ") == 2
    assert "[" in proc.stdout
    assert not list(tmp_path.iterdir())  # nothing written: indices went to a temporary directory
    proc = run_tool("preview_codeswitch", ["--data-path", str(tmp_path / "none"), *args], timeout=180, cwd=tmp_path)
    assert proc.returncode == 2 and "none" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "ERROR" in line]) == 1
