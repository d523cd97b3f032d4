"""Writer of megatron-core ``IndexedDataset`` files (``.bin`` + ``.idx``, index format version 1)
that needs neither torch nor megatron-core.

Preprocessing and the code-switch sidecar write through it: importing megatron-core (and torch
with it) costs a preprocessing run seconds of CPU, more than tokenizing tens of megabytes. The
files are byte for byte those of ``megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder``
(tests/unit/test_indexed_writer.py compares them), and `IndexWriter` has the part of its
interface that `sidecar.append_documents` and `integrity.hash_builder_output` use
(``data_file``, ``dtype``, ``multimodal``, ``sequence_lengths``, ``document_indices``,
``add_document``, ``add_index``, ``finalize``).
"""
from __future__ import annotations

import shutil
import struct
from typing import Sequence

import numpy as np

from megatron_prealign.data.integrity import _DTYPES, _INDEX_HEADER, index_summary

__all__ = ["IndexWriter"]

_CODES = {np.dtype(t): code for code, t in _DTYPES.items()}


class IndexWriter:
    """Appends one-sequence-or-more documents to ``bin_path``; `finalize` writes the index."""

    multimodal = False

    def __init__(self, bin_path: str, dtype=np.int32) -> None:
        self.dtype = np.dtype(dtype).type
        if np.dtype(self.dtype) not in _CODES:
            raise ValueError(f"dtype {np.dtype(dtype)} has no megatron-core index code")
        self.data_file = open(bin_path, "wb")
        self.sequence_lengths: list[int] = []
        self.document_indices: list[int] = [0]

    def add_document(self, values, lengths: Sequence[int], modes=None) -> None:
        """One document of ``len(lengths)`` sequences (megatron-core's ``add_document``)."""
        if modes is not None:
            raise ValueError("IndexWriter writes no sequence modes (not multimodal)")
        array = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=self.dtype)
        if int(np.sum(lengths, dtype=np.int64)) != array.size:
            raise ValueError(f"sequence lengths (sum {int(np.sum(lengths))}) must split the {array.size} values")
        self.data_file.write(array.data)
        self.sequence_lengths.extend(int(n) for n in lengths)
        self.document_indices.append(len(self.sequence_lengths))

    def add_index(self, path_prefix: str) -> None:
        """Append the dataset ``<path_prefix>.{bin,idx}``, which must have this writer's dtype."""
        summary = index_summary(path_prefix)
        if summary.dtype != self.dtype:
            raise ValueError(f"{path_prefix}.idx holds {np.dtype(summary.dtype)}, this writer {np.dtype(self.dtype)}")
        header = len(_INDEX_HEADER) + struct.calcsize("<QBQQ")
        sequences, documents = summary.num_sequences, summary.num_documents + 1
        with open(path_prefix + ".idx", "rb") as f:
            f.seek(header)
            lengths = np.fromfile(f, dtype="<i4", count=sequences)
            f.seek(header + sequences * (4 + 8))
            document_indices = np.fromfile(f, dtype="<i8", count=documents)
        offset = len(self.sequence_lengths)
        self.sequence_lengths.extend(lengths.tolist())
        self.document_indices.extend((offset + document_indices[1:]).tolist())
        with open(path_prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self.data_file)

    def finalize(self, idx_path: str) -> None:
        """Close the ``.bin`` and write the ``.idx``."""
        self.data_file.close()
        lengths = np.asarray(self.sequence_lengths, dtype="<i4")
        pointers = np.zeros(len(lengths), dtype="<i8")
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        with open(idx_path, "wb") as f:
            f.write(_INDEX_HEADER)
            f.write(struct.pack("<QBQQ", 1, _CODES[np.dtype(self.dtype)], len(lengths), len(self.document_indices)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(np.asarray(self.document_indices, dtype="<i8").tobytes())
