"""Tier 2 (single-process megatron-core on CPU, seconds): CodeSwitchGPTDataset.

* ratio 0 is bitwise megatron-core's GPTDataset, under each GPTDatasetConfig option;
* at ratio > 0 every sample equals the oracle `reference_codeswitch` (tests/_codeswitch_reference.py)
  on spans found by scanning whole documents (independent of the sidecar), and the masks follow
  the switched stream;
* determinism across DataLoader worker counts, pickling and a second process;
* the index-cache key tracks lexicon, ratio and seed; a foreign sidecar is refused;
* the dataset works inside BlendedMegatronDatasetBuilder (weighted blend of two prefixes).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_prealign.data.codeswitch import STATS_KEYS, LexiconArrays
from megatron_prealign.data.dataset import (
    CodeSwitchGPTDataset,
    CodeSwitchGPTDatasetConfig,
    MegatronTokenizerView,
)
from megatron_prealign.data.sidecar import SidecarError
from tests._codeswitch_reference import reference_codeswitch

REPO = Path(__file__).resolve().parents[2]
SEQ = 24
BASE = dict(
    random_seed=5,
    sequence_length=SEQ,
    split="1,0,0",
    reset_position_ids=False,
    reset_attention_mask=False,
    eod_mask_loss=False,
)


def build(cls, prefix, tokenizer, cache, split=Split.train, num_samples=None, **kw):
    """A CodeSwitchGPTDataset or GPTDataset over all documents of one prefix."""
    options = {**BASE, **kw}
    if cls is GPTDataset:
        config = GPTDatasetConfig(
            blend=([prefix], None), path_to_cache=str(cache), tokenizer=MegatronTokenizerView(tokenizer), **options
        )
    else:
        config = CodeSwitchGPTDatasetConfig(
            blend=([prefix], None), path_to_cache=str(cache), tokenizer=tokenizer, **options
        )
    indexed = IndexedDataset(prefix)
    indices = np.arange(len(indexed), dtype=np.int32)
    return cls(indexed, prefix, indices, num_samples, split, config)


def assert_same_sample(a, b):
    for key in b:
        assert key in a, key
        x, y = torch.as_tensor(a[key]), torch.as_tensor(b[key])
        assert x.dtype == y.dtype, key
        assert torch.equal(x, y), key


OPTION_SETS = {
    "defaults": {},
    "resets_and_eod_mask": dict(reset_position_ids=True, reset_attention_mask=True, eod_mask_loss=True),
    "no_attention_mask_no_extra_token": dict(create_attention_mask=False, add_extra_token_to_sequence=False),
}


@pytest.mark.parametrize("options", list(OPTION_SETS.values()), ids=list(OPTION_SETS))
def test_ratio_zero_is_gptdataset_bitwise(options, data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    prefix = data_prefixes[0]
    cs = build(
        CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path, codeswitch_ratio=0.0,
        lexicon_path=data_lexicon_path, **options,
    )
    ref = build(GPTDataset, prefix, data_tokenizer, tmp_path, **options)
    assert len(cs) == len(ref) > 100
    eligible = 0
    # Every third sample keeps the masks-with-resets variant (a Python loop per EOD) fast.
    for i in [*range(0, len(ref), 3), len(ref) - 1, None]:
        a, b = cs[i], ref[i]
        assert_same_sample(a, b)
        assert set(a) == set(b) | set(STATS_KEYS)
        assert a["cs_switched_words"] == a["cs_switched_tokens"] == 0
        eligible += a["cs_eligible_words"]
    assert eligible > 0  # the sidecar was read: the stats see the dictionary words


def test_ratio_zero_partial_validation_sample_is_gptdataset(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    # Keeping the last partial validation sample makes GPTDataset pad the window.
    prefix = data_prefixes[1]
    kw = dict(drop_last_partial_validation_sequence=False, split=Split.valid)
    cs = build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path, codeswitch_ratio=0.0,
               lexicon_path=data_lexicon_path, **kw)
    ref = build(GPTDataset, prefix, data_tokenizer, tmp_path, **kw)
    padded = 0
    for i in range(len(ref)):
        assert_same_sample(cs[i], ref[i])
        padded += bool((ref[i]["loss_mask"] == 0).any())
    assert padded == 1  # the last, partial sample has a padded tail


def document_spans(prefix, lexicon):
    """Spans of every document by scanning it whole (independent of the sidecar)."""
    indexed = IndexedDataset(prefix)
    return [lexicon.scan(np.asarray(indexed[d], dtype=np.int32)) for d in range(len(indexed))]


def expected_sample(ds, idx, doc_spans, lexicon_arrays, ratio, seed):
    """What CodeSwitchGPTDataset[idx] must be, via the reference and GPTDataset's post-processing
    (config without resets: loss mask = switch mask, pad ids -> 0)."""
    text, _ = GPTDataset._query_document_sample_shuffle_indices(ds, idx)
    shuffled = ds.shuffle_index[idx]
    (d0, o0), (d1, o1) = ds.sample_index[shuffled], ds.sample_index[shuffled + 1]
    starts, lengths, entries = [], [], []
    pos = 0
    for k in range(int(d0), int(d1) + 1):
        doc = int(ds.document_index[k])
        off = int(o0) if k == d0 else 0
        doc_len = int(ds.dataset.sequence_lengths[doc])
        end = min(doc_len, int(o1) + 1) if k == d1 else doc_len  # exclusive, in document coords
        for s, n, e in zip(*doc_spans[doc]):
            if s >= off and s + n <= end:
                starts.append(s - off + pos)
                lengths.append(n)
                entries.append(e)
        pos += end - off
    tokens, labels, mask, stats = reference_codeswitch(
        text, (starts, lengths, entries), lexicon_arrays, ratio, seed, idx, SEQ, ds._pad_token_id, pos
    )
    mask[labels == ds._pad_token_id] = 0
    tokens[tokens == ds._pad_token_id] = 0
    labels[labels == ds._pad_token_id] = 0
    return tokens, labels, mask, stats


def test_switched_samples_match_reference(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    from megatron_prealign.lexicon.lexicon import load_lexicon

    lexicon = load_lexicon(data_lexicon_path, data_tokenizer)
    arrays = LexiconArrays.from_lexicon(lexicon)
    prefix = data_prefixes[0]
    ds = build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path, codeswitch_ratio=0.5,
               codeswitch_seed=99, lexicon_path=data_lexicon_path)
    spans = document_spans(prefix, lexicon)
    switched = 0
    for i in range(len(ds)):
        got = ds[i]
        tokens, labels, mask, stats = expected_sample(ds, i, spans, arrays, 0.5, 99)
        np.testing.assert_array_equal(got["tokens"].numpy(), tokens)
        np.testing.assert_array_equal(got["labels"].numpy(), labels)
        np.testing.assert_array_equal(got["loss_mask"].numpy(), mask)
        assert (got["cs_switched_words"], got["cs_eligible_words"], got["cs_switched_tokens"]) == tuple(stats)
        assert got["tokens"].shape == (SEQ,) and got["position_ids"].tolist() == list(range(SEQ))
        switched += stats.switched_words
    assert switched > 10
    # Translations really are in the input: some German entry appears in a switched sample.
    text = " ".join(data_tokenizer.decode(ds[i]["tokens"].tolist()) for i in range(len(ds)))
    assert any(word in text for word in ("Haus", "Fluss", "Wasser", "Fenster", "Kinder"))


def test_masks_follow_the_switched_stream(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    options = dict(reset_position_ids=True, reset_attention_mask=True, eod_mask_loss=True)
    ds = build(CodeSwitchGPTDataset, data_prefixes[1], data_tokenizer, tmp_path, codeswitch_ratio=1.0,
               lexicon_path=data_lexicon_path, **options)
    plain = build(CodeSwitchGPTDataset, data_prefixes[1], data_tokenizer, tmp_path, codeswitch_ratio=1.0,
                  lexicon_path=data_lexicon_path)
    unswitched = build(GPTDataset, data_prefixes[1], data_tokenizer, tmp_path, **options)
    eod = data_tokenizer.eod
    moved = 0
    for i in range(len(ds)):
        s, p = ds[i], plain[i]
        tokens = s["tokens"]
        assert torch.equal(tokens, p["tokens"]) and torch.equal(s["labels"], p["labels"])
        eods = torch.nonzero(tokens == eod).flatten().tolist()
        # Positions restart after every EOD of the *switched* stream ...
        starts = [0] + [e + 1 for e in eods if e + 1 < SEQ]
        for b, e in zip(starts, starts[1:] + [SEQ]):
            assert s["position_ids"][b:e].tolist() == list(range(e - b))
        # ... attention does not cross them, and EOD inputs carry no loss.
        for e in eods:
            assert s["attention_mask"][0, e + 1 :, : e + 1].all()  # True = masked out
        assert (s["loss_mask"][tokens == eod] == 0).all()
        # Apart from EOD inputs, the loss mask is the switch mask.
        keep = tokens != eod
        assert torch.equal(s["loss_mask"][keep], p["loss_mask"][keep])
        moved += eods != torch.nonzero(unswitched[i]["tokens"] == eod).flatten().tolist()
    assert moved > 0  # switching shifted some EODs, and the masks moved with them


def test_effective_switch_rate_matches_ratio(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    ds = build(CodeSwitchGPTDataset, data_prefixes[0], data_tokenizer, tmp_path, codeswitch_ratio=0.3,
               lexicon_path=data_lexicon_path, num_samples=1500)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    switched, eligible = int(batch["cs_switched_words"].sum()), int(batch["cs_eligible_words"].sum())
    assert batch["cs_switched_words"].dtype == torch.int64
    assert eligible > 1000
    sigma = (0.3 * 0.7 / eligible) ** 0.5
    assert abs(switched / eligible - 0.3) < 5 * sigma


def sample_digest(ds, indices) -> str:
    h = hashlib.sha256()
    for i in indices:
        for key, value in sorted(ds[i].items()):
            h.update(key.encode())
            h.update(torch.as_tensor(value).numpy().tobytes())
    return h.hexdigest()


def test_same_samples_for_any_worker_count_and_after_pickling(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    ds = build(CodeSwitchGPTDataset, data_prefixes[0], data_tokenizer, tmp_path, codeswitch_ratio=0.5,
               lexicon_path=data_lexicon_path)
    n = 32
    subset = torch.utils.data.Subset(ds, range(n))
    runs = {}
    for workers in (0, 2, 4):
        loader = torch.utils.data.DataLoader(subset, batch_size=4, num_workers=workers, shuffle=False)
        runs[workers] = list(loader)
    for workers in (2, 4):
        for b0, b1 in zip(runs[0], runs[workers]):
            assert b0.keys() == b1.keys()
            for key in b0:
                assert torch.equal(b0[key], b1[key]), (workers, key)
    # Reading in a different order (as a restarted or re-sharded run would) changes nothing.
    forward = [ds[i] for i in range(n)]
    backward = {i: ds[i] for i in reversed(range(n))}
    for i in range(n):
        assert_same_sample(forward[i], backward[i])
    clone = pickle.loads(pickle.dumps(ds))
    for i in range(n):
        assert_same_sample(clone[i], forward[i])


_SUBPROCESS = """
import sys, hashlib, numpy as np, torch
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split
from megatron_prealign.lexicon.tokenizer import build_tokenizer
from megatron_prealign.data.dataset import CodeSwitchGPTDataset, CodeSwitchGPTDatasetConfig
prefix, lexicon, cache, model = sys.argv[1:5]
config = CodeSwitchGPTDatasetConfig(
    random_seed=5, sequence_length=%d, split="1,0,0", reset_position_ids=False,
    reset_attention_mask=False, eod_mask_loss=False, blend=([prefix], None), path_to_cache=cache,
    tokenizer=build_tokenizer("SentencePieceTokenizer", model), codeswitch_ratio=0.5,
    lexicon_path=lexicon)
indexed = IndexedDataset(prefix)
ds = CodeSwitchGPTDataset(indexed, prefix, np.arange(len(indexed), dtype=np.int32), None, Split.train, config)
h = hashlib.sha256()
for i in range(len(ds)):
    for key, value in sorted(ds[i].items()):
        h.update(key.encode()); h.update(torch.as_tensor(value).numpy().tobytes())
print("DIGEST", h.hexdigest())
""" % SEQ


def test_same_samples_in_another_process(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path):
    prefix = data_prefixes[0]
    ds = build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path / "here", codeswitch_ratio=0.5,
               lexicon_path=data_lexicon_path)
    mine = sample_digest(ds, range(len(ds)))
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS, prefix, data_lexicon_path, str(tmp_path / "there"),
         str(REPO / "tests" / "assets" / "tiny_sp.model")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("DIGEST")]
    assert theirs == [mine]


def test_cache_key_tracks_lexicon_ratio_and_seed(data_tokenizer, data_lexicon_path, data_corpus_lines,
                                                 data_write_corpus, tmp_path):
    from megatron_prealign.lexicon.dictionary import read_dictionary
    from megatron_prealign.lexicon.lexicon import compile_lexicon, load_lexicon

    lex1 = load_lexicon(data_lexicon_path, data_tokenizer)
    small = tmp_path / "small.muse"
    small.write_text("house Haus\nriver Fluss\n", encoding="utf-8")
    lex2 = compile_lexicon(read_dictionary(small), data_tokenizer)
    lex2_path = str(tmp_path / "small.lex")
    lex2.save(lex2_path)
    assert lex2.sha256 != lex1.sha256

    prefix = str(tmp_path / "c_text_document")
    data_write_corpus(prefix, data_corpus_lines, data_tokenizer, lex1)
    base = dict(codeswitch_ratio=0.1, codeswitch_seed=1, lexicon_path=data_lexicon_path)
    hashes = {}
    for name, change in {
        "base": {},
        "base_again": {},
        "ratio": dict(codeswitch_ratio=0.2),
        "seed": dict(codeswitch_seed=2),
    }.items():
        ds = build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path / "cache", **{**base, **change})
        hashes[name] = ds.unique_description_hash
    for key in ("codeswitch_ratio", "lexicon_sha256", "codeswitch_seed"):
        assert key in CodeSwitchGPTDataset._key_config_attributes()

    # The sidecar was written with lexicon 1: a run with lexicon 2 is refused, naming the files.
    with pytest.raises(SidecarError) as err:
        build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path / "cache", **{**base, "lexicon_path": lex2_path})
    assert prefix + "_codeswitch" in str(err.value) and "--lexicon" in str(err.value)

    # Rewritten with lexicon 2 (same path, same tokens), it loads, under another cache key.
    data_write_corpus(prefix, data_corpus_lines, data_tokenizer, lex2)
    ds = build(CodeSwitchGPTDataset, prefix, data_tokenizer, tmp_path / "cache", **{**base, "lexicon_path": lex2_path})
    hashes["lexicon"] = ds.unique_description_hash
    assert hashes["base"] == hashes["base_again"]
    assert len({hashes[k] for k in ("base", "ratio", "seed", "lexicon")}) == 4


@pytest.fixture
def single_process_group(tmp_path):
    """A world of one (gloo): megatron-core's BlendedDataset asks for the rank when it builds."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg_store'}", world_size=1, rank=0
    )
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def test_weighted_blend_of_two_prefixes(data_prefixes, data_tokenizer, data_lexicon_path, tmp_path,
                                        single_process_group):
    a, b = data_prefixes
    config = CodeSwitchGPTDatasetConfig(
        **{**BASE, "split": "1,0,0"},
        blend=([a, b], [0.7, 0.3]),
        path_to_cache=str(tmp_path / "cache"),
        tokenizer=data_tokenizer,
        codeswitch_ratio=0.5,
        lexicon_path=data_lexicon_path,
    )
    train, valid, test = BlendedMegatronDatasetBuilder(
        CodeSwitchGPTDataset, [60, 0, 0], lambda: True, config
    ).build()
    assert isinstance(train, BlendedDataset) and valid is None and test is None
    assert all(isinstance(d, CodeSwitchGPTDataset) for d in train.datasets)
    ids = []
    for i in range(len(train)):
        sample = train[i]
        ids.append(int(sample["dataset_id"]))
        inner = train.datasets[sample["dataset_id"]][train.dataset_sample_index[i]]
        assert_same_sample(sample, inner)
        assert sample["tokens"].shape == (SEQ,)
    share = np.mean(np.asarray(ids) == 0)
    assert set(ids) == {0, 1} and 0.6 < share < 0.8
    batch = torch.utils.data.default_collate([train[i] for i in range(8)])
    assert batch["tokens"].shape == (8, SEQ) and batch["cs_eligible_words"].shape == (8,)


def test_config_validation(data_tokenizer, data_lexicon_path, data_prefixes, tmp_path):
    # The knobs' own rules (range, --lexicon with a ratio > 0) are DataConfig's, the one owner
    # (tests/unit/test_training_data.py); this config carries them and derives the rest.
    common = dict(**BASE, blend=([data_prefixes[0]], None), path_to_cache=str(tmp_path), tokenizer=data_tokenizer)
    with pytest.raises(TypeError, match="codeswitch_ratio"):
        CodeSwitchGPTDatasetConfig(**common, lexicon_path=data_lexicon_path)  # no default of its own
    with pytest.raises(ValueError, match="sha256"):
        CodeSwitchGPTDatasetConfig(**common, codeswitch_ratio=0.05, lexicon_path=data_lexicon_path,
                                   lexicon_sha256="0" * 64)
    with pytest.raises(ValueError, match="--lexicon"):
        CodeSwitchGPTDatasetConfig(**common, codeswitch_ratio=0.05, lexicon_path=str(tmp_path / "none.lex"))
    config = CodeSwitchGPTDatasetConfig(**common, codeswitch_ratio=0.05, lexicon_path=data_lexicon_path)
    assert config.codeswitch_ratio == 0.05 and len(config.lexicon_sha256) == 64
    assert config.codeswitch_seed == BASE["random_seed"]  # None: the dataset seed, as DataConfig says
    assert CodeSwitchGPTDatasetConfig(**common, codeswitch_ratio=0.05, codeswitch_seed=7,
                                      lexicon_path=data_lexicon_path).codeswitch_seed == 7
    # Without a lexicon and with ratio 0, no sidecar is needed.
    plain = CodeSwitchGPTDatasetConfig(**common, codeswitch_ratio=0.0, lexicon_path=None)
    indexed = IndexedDataset(data_prefixes[0])
    ds = CodeSwitchGPTDataset(indexed, data_prefixes[0], np.arange(len(indexed), dtype=np.int32), None, Split.train, plain)
    assert ds[0]["cs_eligible_words"] == 0
