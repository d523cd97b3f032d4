"""Tier 1: `IndexWriter` (no torch, no megatron-core) writes the same bytes as megatron-core's
IndexedDatasetBuilder, through every call preprocessing makes, and its files open with
megatron-core's reader."""
from __future__ import annotations

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

from megatron_prealign.data.indexed_writer import IndexWriter
from megatron_prealign.data.preprocess import _token_dtype
from megatron_prealign.data.sidecar import append_documents


def fill(builder, rng, dtype, part_prefix):
    high = min(np.iinfo(dtype).max, 70000)
    for _ in range(5):
        sizes = rng.integers(0, 7, rng.integers(1, 4))
        builder.add_document(rng.integers(0, high, int(sizes.sum())).astype(dtype), sizes.tolist())
    sizes = rng.integers(0, 9, 20)
    append_documents(builder, rng.integers(0, high, int(sizes.sum())).astype(dtype), sizes)
    builder.add_index(part_prefix)
    append_documents(builder, np.zeros(0, dtype), np.zeros(0, np.int64))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_same_bytes_as_megatron_core(tmp_path, dtype):
    part = IndexedDatasetBuilder(str(tmp_path / "part.bin"), dtype=dtype)
    part.add_document(np.arange(10, dtype=dtype), [4, 6])
    part.add_document(np.arange(3, dtype=dtype), [3])
    part.finalize(str(tmp_path / "part.idx"))
    for name, cls in (("ours", IndexWriter), ("mcore", IndexedDatasetBuilder)):
        builder = cls(str(tmp_path / f"{name}.bin"), dtype=dtype)
        fill(builder, np.random.default_rng(0), dtype, str(tmp_path / "part"))
        builder.finalize(str(tmp_path / f"{name}.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"mcore{suffix}").read_bytes()
    ds = IndexedDataset(str(tmp_path / "ours"))
    assert ds[len(ds) - 1].tolist() == [0, 1, 2]  # the appended partition's last sequence


def test_empty_dataset_and_refusals(tmp_path):
    for name, cls in (("ours", IndexWriter), ("mcore", IndexedDatasetBuilder)):
        cls(str(tmp_path / f"{name}.bin"), dtype=np.int32).finalize(str(tmp_path / f"{name}.idx"))
    assert (tmp_path / "ours.idx").read_bytes() == (tmp_path / "mcore.idx").read_bytes()
    writer = IndexWriter(str(tmp_path / "w.bin"), dtype=np.uint16)
    with pytest.raises(ValueError, match="split"):
        writer.add_document(np.arange(3), [2])
    with pytest.raises(ValueError, match="int32"):
        writer.add_index(str(tmp_path / "ours"))
    with pytest.raises(ValueError, match="code"):
        IndexWriter(str(tmp_path / "x.bin"), dtype=np.complex64)


def test_token_dtype_is_megatron_cores_choice():
    for vocab in (1, 255, 32000, 65499, 65500, 65535, 65536, 150000):
        assert _token_dtype(vocab) == DType.optimal_dtype(vocab), vocab
