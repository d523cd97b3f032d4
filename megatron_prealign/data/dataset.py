"""`CodeSwitchGPTDataset`: megatron-core's GPTDataset with input-only code-switching.

The subclass keeps everything GPTDataset does (document/sample/shuffle indices, their cache,
blending through ``BlendedMegatronDatasetBuilder``, eod/pad handling, the ltor masks) and changes
one step of ``__getitem__``: between drawing the sample's token window and building
``tokens``/``labels``/``loss_mask``, the window's dictionary words (read from the code-switch
sidecar, see `sidecar.py`) are switched by `apply_codeswitch`. With ``codeswitch_ratio == 0`` the
returned tensors are bitwise those of GPTDataset.
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from megatron.core.datasets.gpt_dataset import (
    GPTDataset,
    GPTDatasetConfig,
    _get_ltor_masks_and_position_ids,
)
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_prealign.data.codeswitch import (
    STATS_KEYS,
    CodeSwitchConfig,
    CodeSwitchStats,
    LexiconArrays,
    _native,
    apply_codeswitch,
)
from megatron_prealign.data.sidecar import _EMPTY_SPANS, CodeSwitchSidecar, SidecarError

__all__ = ["CodeSwitchGPTDataset", "CodeSwitchGPTDatasetConfig", "MegatronTokenizerView"]



class MegatronTokenizerView:
    """A ``megatron_prealign.lexicon`` tokenizer seen as megatron-core datasets expect it.

    megatron-core reads ``vocab_size``, ``eod`` and ``pad`` from ``config.tokenizer`` and puts its
    ``unique_identifiers`` in the index-cache key; the key here is the tokenizer's vocabulary
    fingerprint, so moving the model file does not invalidate caches but changing it does.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.unique_identifiers = OrderedDict(
            [
                ("class", type(tokenizer).__name__),
                ("tokenizer_type", getattr(tokenizer, "tokenizer_type", type(tokenizer).__name__)),
                ("fingerprint", tokenizer.fingerprint),
            ]
        )

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def eod(self) -> int:
        return self.tokenizer.eod

    @property
    def pad(self) -> int:
        return self.tokenizer.pad

    @property
    def fingerprint(self) -> str:
        return self.tokenizer.fingerprint

    def tokenize(self, text: str) -> List[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: List[int]) -> str:
        return self.tokenizer.decode(ids)


@functools.lru_cache(maxsize=8)
def _load_lexicon_arrays(path: str, _mtime_ns: int, _size: int) -> Tuple[LexiconArrays, str, str]:
    """(arrays, sha256, tokenizer fingerprint) of a lexicon file; cached per file version so
    the datasets of a blend share one copy."""
    from megatron_prealign.lexicon.lexicon import load_lexicon

    lexicon = load_lexicon(path)
    return LexiconArrays.from_lexicon(lexicon), lexicon.sha256, lexicon.tokenizer_fingerprint


def load_lexicon_arrays(path: str) -> Tuple[LexiconArrays, str, str]:
    """``(LexiconArrays, sha256, tokenizer_fingerprint)`` of the lexicon at ``path``."""
    st = os.stat(path)
    return _load_lexicon_arrays(os.path.abspath(path), st.st_mtime_ns, st.st_size)


@dataclass
class CodeSwitchGPTDatasetConfig(GPTDatasetConfig):
    """GPTDatasetConfig plus the code-switch knobs (see `CodeSwitchConfig` for their meaning).

    Fields are flat (not a nested `CodeSwitchConfig`) because megatron-core builds the index
    cache key from ``getattr(config, name)`` of `CodeSwitchGPTDataset._key_config_attributes`.
    ``tokenizer`` may be a ``megatron_prealign.lexicon`` tokenizer; it is wrapped in a
    `MegatronTokenizerView` when it lacks megatron's ``unique_identifiers``.
    """

    codeswitch_ratio: float = 0.05
    """Probability that an eligible dictionary-word occurrence is switched (``--codeswitch-ratio``)."""

    codeswitch_seed: int = 1234
    """Seed of the switching hash (``--codeswitch-seed``)."""

    lexicon_path: Optional[str] = None
    """The compiled lexicon (``--lexicon``); without it no sidecar is read and nothing switches
    (ratio must then be 0)."""

    lexicon_sha256: Optional[str] = None
    """Expected sha256 of the lexicon; filled from the file when None. Part of the cache key, and
    the sidecar of every blended prefix must have been built with this lexicon."""

    def __post_init__(self) -> None:
        if self.tokenizer is not None and not hasattr(self.tokenizer, "unique_identifiers"):
            self.tokenizer = MegatronTokenizerView(self.tokenizer)
        super().__post_init__()
        CodeSwitchConfig(
            ratio=self.codeswitch_ratio, seed=self.codeswitch_seed, lexicon_path=self.lexicon_path
        )
        if self.lexicon_path is not None:
            if not os.path.isfile(self.lexicon_path):
                raise ValueError(f"--lexicon {self.lexicon_path}: no such file")
            _, sha, _ = load_lexicon_arrays(self.lexicon_path)
            if self.lexicon_sha256 is None:
                self.lexicon_sha256 = sha
            elif self.lexicon_sha256 != sha:
                raise ValueError(
                    f"--lexicon {self.lexicon_path} has sha256 {sha}, expected {self.lexicon_sha256}"
                )

    @property
    def codeswitch(self) -> CodeSwitchConfig:
        """The code-switch fields as a `CodeSwitchConfig`."""
        return CodeSwitchConfig(
            ratio=self.codeswitch_ratio, seed=self.codeswitch_seed, lexicon_path=self.lexicon_path
        )


class CodeSwitchGPTDataset(GPTDataset):
    """GPTDataset whose samples are input-only code-switched (DESIGN.md §1, stage 2).

    ``__getitem__`` returns GPTDataset's keys (``tokens``, ``labels``, ``loss_mask``,
    ``position_ids`` and, when ``create_attention_mask``, ``attention_mask``) with the same
    shapes and dtypes, plus Python ints under `STATS_KEYS` (switched words, eligible words,
    switched tokens; collated to int64 (batch,) tensors) that a training loop sums for the
    effective switch rate.

    The sidecar ``<prefix>_codeswitch.{bin,idx,json}`` is opened next to every token prefix when
    ``config.lexicon_path`` is set, and checked against the token dataset and the lexicon.

    Args: as GPTDataset.
    """

    def __init__(
        self,
        indexed_dataset: IndexedDataset,
        dataset_path: Optional[str],
        indexed_indices: np.ndarray,
        num_samples: Optional[int],
        index_split: Split,
        config: CodeSwitchGPTDatasetConfig,
    ) -> None:
        if not isinstance(config, CodeSwitchGPTDatasetConfig):
            raise TypeError(
                f"CodeSwitchGPTDataset needs a CodeSwitchGPTDatasetConfig, got {type(config).__name__}"
            )
        super().__init__(
            indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
        )
        self._lexicon: Optional[LexiconArrays] = None
        self._sidecar: Optional[CodeSwitchSidecar] = None
        self._plain_indices: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        if config.lexicon_path is not None:
            lexicon, sha, lex_fingerprint = load_lexicon_arrays(config.lexicon_path)
            if sha != config.lexicon_sha256:
                raise SidecarError(
                    f"--lexicon {config.lexicon_path} changed since the config was made "
                    f"(sha256 {sha}, config says {config.lexicon_sha256})"
                )
            tok_fingerprint = getattr(config.tokenizer, "fingerprint", None)
            if tok_fingerprint is not None and tok_fingerprint != lex_fingerprint:
                raise SidecarError(
                    f"--lexicon {config.lexicon_path} was compiled for another tokenizer than the "
                    f"one in the dataset config; rebuild it with tools/build_lexicon.py"
                )
            self._lexicon = lexicon
            self._sidecar = CodeSwitchSidecar(indexed_dataset.path_prefix, mmap=config.mmap_bin_files)
            self._sidecar.check_matches(
                indexed_dataset, lexicon_sha256=sha, tokenizer_fingerprint=lex_fingerprint
            )

    @staticmethod
    def _key_config_attributes() -> List[str]:
        """GPTDataset's cache-key attributes plus every code-switch knob, so two runs with a
        different lexicon, ratio or seed never share cached indices."""
        return GPTDataset._key_config_attributes() + [
            "codeswitch_ratio",
            "lexicon_sha256",
            "codeswitch_seed",
        ]

    def __getstate__(self) -> Dict[str, Any]:
        # The plain views are rebuilt on first use; pickling them would copy the indices twice.
        state = self.__dict__.copy()
        state["_plain_indices"] = None
        return state

    # ------------------------------------------------------------------------------------------

    def _sample_walk(self, idx: int) -> Tuple[np.ndarray, int, int, int, int]:
        """``(document_index, doc_begin, offset_begin, doc_end, offset_end)`` of sample ``idx``:
        the rows of GPTDataset's indices that its document walk follows."""
        if self._plain_indices is None:
            # Plain ndarray views of megatron's memory-mapped indices: indexing a np.memmap
            # goes through Python-level __getitem__/__array_finalize__ on every access.
            self._plain_indices = tuple(
                np.asarray(a) for a in (self.shuffle_index, self.sample_index, self.document_index)
            )
        shuffle_index, sample_index, document_index = self._plain_indices
        shuffled = int(shuffle_index[idx])
        doc_beg, off_beg, doc_end, off_end = sample_index[shuffled : shuffled + 2].ravel().tolist()
        return document_index, doc_beg, off_beg, doc_end, off_end

    def _switch_compiled(
        self, sample: int, window: np.ndarray, window_size: int, sidecar_arrays: Tuple[np.ndarray, ...]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, CodeSwitchStats]:
        """Span lookup, switching and GPTDataset's pad handling in one compiled call
        (``_C.codeswitch_sample``); valid when GPTDataset's masks are cacheable, whose loss mask
        is all ones before the pad handling."""
        lexicon = self._lexicon
        try:
            tokens, labels, loss_mask, counts = _native().codeswitch_sample(
                window, window_size, *self._sample_walk(sample),
                int(self.config.add_extra_token_to_sequence), self.dataset.sequence_lengths,
                *sidecar_arrays, lexicon.entry_offsets, lexicon.entry_flat,
                lexicon.translation_offsets, lexicon.translation_flat,
                self.config.codeswitch_ratio, self.config.codeswitch_seed, sample,
                self.config.sequence_length, self._pad_token_id,
            )
        except ValueError as exc:
            raise self._sidecar.error(exc, lexicon_path=self.config.lexicon_path) from exc
        return (torch.from_numpy(tokens), torch.from_numpy(labels), torch.from_numpy(loss_mask),
                CodeSwitchStats._make(counts))

    def _window_spans(self, idx: int, window_size: int) -> Tuple[Tuple[np.ndarray, ...], int]:
        """Switch spans of sample ``idx`` in window coordinates, and the count of real tokens.

        Mirrors the document walk of ``GPTDataset._query_document_sample_shuffle_indices``: the
        window is the concatenation of parts ``(document, offset, length)`` followed by pad ids
        when the documents ran out; a span is used when it lies fully inside its part.
        """
        extra = int(self.config.add_extra_token_to_sequence)
        document_index, doc_beg, off_beg, doc_end, off_end = self._sample_walk(idx)
        # Compiled walk + lookup when the sidecar is memory-mapped; the Python walk below is the
        # same computation for a sidecar read through file reads.
        found = self._sidecar.sample_window_spans(
            document_index, doc_beg, off_beg, doc_end, off_end, extra, window_size,
            self.dataset.sequence_lengths,
        )
        if found is not None:
            return found
        doc_lengths = self.dataset.sequence_lengths

        docs = document_index[doc_beg : doc_end + 1].tolist()
        offsets = [0] * len(docs)
        offsets[0] = off_beg
        lengths, positions = [], []
        pos = 0
        for i, doc in enumerate(docs):
            available = int(doc_lengths[doc]) - offsets[i]
            requested = (off_end + extra - offsets[i]) if i == len(docs) - 1 else available
            lengths.append(max(0, min(requested, available)))  # real tokens of this part
            positions.append(pos)
            pos += requested
        if pos > window_size:
            raise SidecarError(
                f"sample {idx} of {self.dataset.path_prefix}: document walk yields {pos} tokens, "
                f"the window has {window_size}"
            )
        valid = positions[-1] + lengths[-1]  # tokens before GPTDataset's pad ids
        spans = self._sidecar.window_spans(docs, offsets, lengths, positions, doc_lengths)
        return spans, valid

    def __getitem__(self, idx: Optional[int]) -> Dict[str, torch.Tensor]:
        """GPTDataset's sample dict for ``idx``, code-switched, plus the `STATS_KEYS` counts.

        ``idx=None`` is megatron's batch-padding sample (sample 0 with a zero loss mask).
        """
        sample = 0 if idx is None else int(idx)
        text, _ = self._query_document_sample_shuffle_indices(sample)  # (seq_length + extra,)
        seq_length = self.config.sequence_length
        pad = self._pad_token_id

        if self.config.add_extra_token_to_sequence:
            window = text  # (seq_length + 1,)
        else:
            # GPTDataset's last label is the pad id: make it the window's label-only token.
            window = np.concatenate([text, np.array([pad], dtype=np.int64)])  # (seq_length + 1,)

        sidecar_arrays = self._sidecar.mapped_arrays() if self._sidecar is not None else None
        if sidecar_arrays is not None and self.masks_and_position_ids_are_cached:
            tokens, labels, loss_mask, stats = self._switch_compiled(sample, window, len(text), sidecar_arrays)
            return self._sample_dict(idx, tokens, labels, loss_mask, self.cached_attention_mask,
                                     self.cached_position_ids, stats)

        if self._sidecar is not None:
            spans, valid = self._window_spans(sample, len(text))
        else:
            spans, valid = _EMPTY_SPANS, len(text)
        tokens_np, labels_np, switch_mask, stats = apply_codeswitch(
            window,
            spans,
            self._lexicon if self._lexicon is not None else _NO_LEXICON,
            self.config.codeswitch_ratio,
            self.config.codeswitch_seed,
            sample,
            seq_length,
            pad,
            valid_length=valid,
        )
        tokens = torch.from_numpy(tokens_np)  # (seq_length,) int64
        labels = torch.from_numpy(labels_np)  # (seq_length,) int64

        # From here on exactly GPTDataset.__getitem__, on the switched stream.
        if not self.masks_and_position_ids_are_cacheable or not self.masks_and_position_ids_are_cached:
            attention_mask, loss_mask, position_ids = _get_ltor_masks_and_position_ids(
                tokens,
                self.config.tokenizer.eod,
                self.config.reset_position_ids,
                self.config.reset_attention_mask,
                self.config.eod_mask_loss,
                self.config.create_attention_mask,
            )
            if self.masks_and_position_ids_are_cacheable:
                self.cached_attention_mask = attention_mask
                self.cached_loss_mask = loss_mask
                self.cached_position_ids = position_ids
                self.masks_and_position_ids_are_cached = True
                # GPTDataset edits the cached mask in place here; a per-sample switch mask must
                # not leak into later samples, so work on a copy.
                loss_mask = loss_mask.clone()
        else:
            attention_mask = self.cached_attention_mask
            loss_mask = self.cached_loss_mask.clone()
            position_ids = self.cached_position_ids

        loss_mask *= torch.from_numpy(switch_mask)
        loss_mask[labels == pad] = 0.0
        tokens[tokens == pad] = 0
        labels[labels == pad] = 0
        return self._sample_dict(idx, tokens, labels, loss_mask, attention_mask, position_ids, stats)

    def _sample_dict(self, idx: Optional[int], tokens: torch.Tensor, labels: torch.Tensor,
                     loss_mask: torch.Tensor, attention_mask: Optional[torch.Tensor],
                     position_ids: torch.Tensor, stats: CodeSwitchStats) -> Dict[str, torch.Tensor]:
        if idx is None:
            loss_mask = torch.zeros_like(loss_mask)
            stats = stats._make((0, 0, 0))

        out: Dict[str, torch.Tensor] = {"tokens": tokens, "labels": labels}
        if self.config.create_attention_mask:
            out["attention_mask"] = attention_mask
        out["loss_mask"] = loss_mask
        out["position_ids"] = position_ids
        # Plain ints, like BlendedDataset's "dataset_id": the default collate turns them into
        # int64 tensors of shape (batch,).
        out.update(zip(STATS_KEYS, stats))
        return out


# Stand-in lexicon for datasets without one: no spans ever reach it.
_NO_LEXICON = LexiconArrays.validated([0], [], [0], [])
