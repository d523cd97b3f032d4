"""`CodeSwitchGPTDataset`: megatron-core's GPTDataset with input-only code-switching.

The subclass keeps everything GPTDataset does (document/sample/shuffle indices, their cache,
blending through ``BlendedMegatronDatasetBuilder``, the sample window, eod/pad handling, the ltor
masks) and changes one step of ``__getitem__``: ``tokens``/``labels`` are not a plain shift of
the window GPTDataset draws but its code-switched stream, built by the compiled
``_C.CodeSwitcher`` from the window's dictionary words (read from the code-switch sidecar, see
`sidecar.py`), together with the loss mask of the switch. With ``codeswitch_ratio == 0`` the
returned tensors are bitwise those of GPTDataset.

Token datasets are opened through ``integrity.open_token_dataset`` (`build_low_level_dataset`):
files complete and as their manifest recorded them, the run's tokenizer or, without a manifest,
token ids inside the model's vocabulary.
"""
from __future__ import annotations

import functools
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
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

from megatron_prealign.data.codeswitch import STATS_KEYS, LexiconArrays, _native
from megatron_prealign.data.integrity import open_token_dataset, verdict_cache_dir
from megatron_prealign.data.sidecar import CodeSwitchSidecar, SidecarError

__all__ = ["CodeSwitchGPTDataset", "CodeSwitchGPTDatasetConfig", "MegatronTokenizerView", "SpanDecision"]


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

    @property
    def tokenizer_type(self) -> Optional[str]:
        return getattr(self.tokenizer, "tokenizer_type", None)

    @property
    def model_path(self) -> Optional[str]:
        return getattr(self.tokenizer, "model_path", None)

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
    """GPTDatasetConfig plus the code-switch knobs, carried where megatron-core reads them.

    The knobs belong to ``megatron_prealign.training.data.DataConfig`` (``--codeswitch-ratio``,
    ``--codeswitch-seed``, ``--lexicon``), which declares their defaults and validates them; this
    config only carries them, so they have no defaults of their own here. The fields are flat
    (not a nested config) because megatron-core builds the index cache key from
    ``getattr(config, name)`` of `CodeSwitchGPTDataset._key_config_attributes`.
    ``tokenizer`` may be a ``megatron_prealign.lexicon`` tokenizer; it is wrapped in a
    `MegatronTokenizerView` when it lacks megatron's ``unique_identifiers``.
    """

    codeswitch_ratio: float = field(kw_only=True)
    """``DataConfig.codeswitch_ratio``: probability that an eligible dictionary-word occurrence is
    switched."""

    lexicon_path: Optional[str] = field(kw_only=True)
    """``DataConfig.lexicon``: the compiled lexicon; None reads no sidecar and switches nothing."""

    codeswitch_seed: Optional[int] = field(default=None, kw_only=True)
    """``DataConfig.codeswitch_seed``; None means ``random_seed`` (the run's ``--seed``), as
    ``DataConfig`` documents, and is replaced by it here."""

    lexicon_sha256: Optional[str] = field(default=None, kw_only=True)
    """Expected sha256 of the lexicon; filled from the file when None. Part of the cache key, and
    the sidecar of every blended prefix must have been built with this lexicon."""

    codeswitch_exclude: Tuple[int, ...] = field(default=(), kw_only=True)
    """Lexicon entries never switched: the pre-pass's held-out words (--align-heldout-fraction),
    so the held-out alignment gap is measured on words neither stage trained on."""

    codeswitch_exclude_digest: Optional[str] = field(default=None, init=False)
    """sha256 of the sorted excluded entries (part of the cache key; the ids themselves are not)."""

    model_vocab_size: Optional[int] = field(default=None, kw_only=True)
    """The model's vocabulary: a dataset whose manifest does not name the run's tokenizer must
    hold only token ids below it. None: the tokenizer's ``vocab_size``."""

    def __post_init__(self) -> None:
        if self.tokenizer is not None and not hasattr(self.tokenizer, "unique_identifiers"):
            self.tokenizer = MegatronTokenizerView(self.tokenizer)
        super().__post_init__()
        if self.codeswitch_seed is None:
            self.codeswitch_seed = self.random_seed
        self.codeswitch_exclude = tuple(sorted(int(e) for e in self.codeswitch_exclude))
        if self.codeswitch_exclude:
            self.codeswitch_exclude_digest = hashlib.sha256(
                np.asarray(self.codeswitch_exclude, dtype="<i8").tobytes()).hexdigest()
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


@dataclass(frozen=True)
class SpanDecision:
    """One dictionary-word span of a sample window and what the switch did with it."""

    start: int
    """First token of the word in the window."""
    length: int
    """Tokens of the word."""
    entry_id: int
    """Its lexicon entry."""
    switched: bool
    """Whether this sample replaces it."""
    translation: np.ndarray
    """int64: the tokens that replace it (empty when not switched; cut where the input ends)."""


class CodeSwitchGPTDataset(GPTDataset):
    """GPTDataset whose samples are input-only code-switched (docs/DESIGN.md §1, stage 2).

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
        # Built on first use: it holds GPTDataset's document index, which megatron-core may load
        # lazily (defer_npy_index_mmap).
        self._switcher: Any = None  # megatron_prealign._C.CodeSwitcher
        self._plain_indices: Optional[Tuple[np.ndarray, np.ndarray]] = None
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
            self._lexicon = lexicon.without_sources(config.codeswitch_exclude) if config.codeswitch_exclude \
                else lexicon
            prefix = indexed_dataset.path_prefix
            self._sidecar = CodeSwitchSidecar(prefix, mmap=config.mmap_bin_files,
                                              cache_dir=verdict_cache_dir(config.path_to_cache, prefix))
            self._sidecar.check_matches(
                indexed_dataset, lexicon_sha256=sha, tokenizer_fingerprint=lex_fingerprint
            )

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: GPTDatasetConfig) -> IndexedDataset:
        """The token dataset at `dataset_path`, opened by ``integrity.open_token_dataset`` (where
        megatron-core's builder opens every prefix of a blend, on rank 0 first)."""
        from megatron.core.datasets.object_storage_utils import is_object_storage_path

        if is_object_storage_path(dataset_path):
            return GPTDataset.build_low_level_dataset(dataset_path, config)
        tokenizer = config.tokenizer
        vocab = getattr(config, "model_vocab_size", None) or getattr(tokenizer, "vocab_size", None)
        return open_token_dataset(dataset_path, mmap=config.mmap_bin_files, tokenizer=tokenizer, vocab_size=vocab,
                                  cache_dir=verdict_cache_dir(config.path_to_cache, dataset_path), flag="--data-path")

    @staticmethod
    def _key_config_attributes() -> List[str]:
        """GPTDataset's cache-key attributes plus every code-switch knob, so two runs with a
        different lexicon, ratio or seed never share cached indices."""
        return GPTDataset._key_config_attributes() + [
            "codeswitch_ratio",
            "lexicon_sha256",
            "codeswitch_seed",
            "codeswitch_exclude_digest",
        ]

    def __getstate__(self) -> Dict[str, Any]:
        # The compiled switcher does not pickle, and the plain views would copy the indices:
        # both are rebuilt on first use.
        state = self.__dict__.copy()
        state["_switcher"] = None
        state["_plain_indices"] = None
        return state

    # ------------------------------------------------------------------------------------------

    def _sample_walk(self, idx: int) -> List[int]:
        """``[doc_begin, offset_begin, doc_end, offset_end]``: the two rows of GPTDataset's
        sample index that the document walk of sample ``idx``'s window follows."""
        if self._plain_indices is None:
            # Plain ndarray views of megatron's memory-mapped indices: indexing a np.memmap
            # goes through Python-level __getitem__/__array_finalize__ on every access.
            self._plain_indices = (np.asarray(self.shuffle_index), np.asarray(self.sample_index))
        shuffle_index, sample_index = self._plain_indices
        shuffled = int(shuffle_index[idx])
        return sample_index[shuffled : shuffled + 2].ravel().tolist()

    def _window(self, sample: int) -> Tuple[np.ndarray, int]:
        """(window int64 (seq_length + 1,), window size) of sample `sample`, as the switch sees it."""
        text, _ = self._query_document_sample_shuffle_indices(sample)  # (seq_length + extra,)
        if self.config.add_extra_token_to_sequence:
            return text, len(text)  # (seq_length + 1,)
        # GPTDataset's last label is the pad id: make it the window's label-only token.
        return np.concatenate([text, np.array([self._pad_token_id], dtype=np.int64)]), len(text)

    def switch_decisions(self, idx: int) -> Tuple[np.ndarray, List[SpanDecision]]:
        """The window of sample `idx` (int64, up to seq_length + 1 tokens, GPTDataset's padding
        cut off) and, per dictionary-word span in it, whether ``self[idx]`` switches it and to
        which tokens. For inspection
        (tools/preview_codeswitch.py): the compiled switcher is asked one span at a time, which
        gives the decisions of the whole sample because each is a function of the seed, the
        sample index and the span's start only.

        Raises:
            ValueError: the dataset has no lexicon (nothing is switched).
        """
        if self._lexicon is None:
            raise ValueError("this dataset has no --lexicon: nothing is switched")
        if self._switcher is None:
            self._switcher = self._build_switcher()
        window, size = self._window(int(idx))
        spans = self._sidecar.native(self.dataset.sequence_lengths).window_spans(
            np.asarray(self.document_index), *self._sample_walk(int(idx)),
            int(self.config.add_extra_token_to_sequence), size)
        starts, lengths, entries, valid = spans
        out = []
        for i in range(len(starts)):
            one = slice(i, i + 1)
            tokens, _, _, (switched, _, written) = self._switcher.switch(
                window, starts[one], lengths[one], entries[one], int(idx), valid)
            s = int(starts[i])
            out.append(SpanDecision(s, int(lengths[i]), int(entries[i]), bool(switched),
                                    np.array(tokens[s : s + written]) if switched else np.zeros(0, np.int64)))
        return window[:valid], out

    def _build_switcher(self) -> Any:
        return _native().CodeSwitcher(
            self._lexicon.native(),
            self.config.codeswitch_ratio,
            self.config.codeswitch_seed,
            self.config.sequence_length,
            self._pad_token_id,
            sidecar=self._sidecar.native(self.dataset.sequence_lengths),
            document_index=np.asarray(self.document_index),
            extra_token=int(self.config.add_extra_token_to_sequence),
        )

    def __getitem__(self, idx: Optional[int]) -> Dict[str, Any]:
        """GPTDataset's sample dict for ``idx``, code-switched, plus the `STATS_KEYS` counts.

        ``idx=None`` is megatron's batch-padding sample (sample 0 with a zero loss mask).
        """
        if self._lexicon is None:
            # Nothing to switch: GPTDataset's own sample.
            out = super().__getitem__(idx)
            out.update(dict.fromkeys(STATS_KEYS, 0))
            return out

        sample = 0 if idx is None else int(idx)
        window, size = self._window(sample)
        if self._switcher is None:
            self._switcher = self._build_switcher()
        # With cacheable masks, GPTDataset's loss mask before its pad step is all ones, so the
        # pad step runs inside the compiled call; otherwise it has to wait for megatron's masks,
        # which are built from the switched tokens before pad ids become 0.
        cacheable = self.masks_and_position_ids_are_cacheable
        try:
            tokens_np, labels_np, switch_mask, counts = self._switcher.sample(
                window, size, *self._sample_walk(sample), sample, cacheable
            )
        except ValueError as exc:
            raise self._sidecar.error(exc, lexicon_path=self.config.lexicon_path) from exc
        tokens = torch.from_numpy(tokens_np)  # (seq_length,) int64
        labels = torch.from_numpy(labels_np)  # (seq_length,) int64

        # From here on GPTDataset.__getitem__ of megatron-core 0.16.1 (gpt_dataset.py, lines
        # 249-296: masks and position ids, cached when cacheable; the pad step; the zero loss mask
        # of the idx=None sample; the dict), applied to the switched stream. It is mirrored, not
        # called: upstream builds tokens and labels as a shift of the window and offers no hook
        # between that and the masks.
        if not cacheable or not self.masks_and_position_ids_are_cached:
            attention_mask, loss_mask, position_ids = _get_ltor_masks_and_position_ids(
                tokens,
                self.config.tokenizer.eod,
                self.config.reset_position_ids,
                self.config.reset_attention_mask,
                self.config.eod_mask_loss,
                self.config.create_attention_mask,
            )
            if cacheable:
                self.cached_attention_mask = attention_mask
                self.cached_loss_mask = loss_mask
                self.cached_position_ids = position_ids
                self.masks_and_position_ids_are_cached = True
        if cacheable:
            # All-ones cached loss mask x switch mask: the switch mask, pad step done in the call.
            attention_mask = self.cached_attention_mask
            position_ids = self.cached_position_ids
            loss_mask = torch.from_numpy(switch_mask)
        else:
            loss_mask *= torch.from_numpy(switch_mask)
            self._switcher.mask_pad(tokens.numpy(), labels.numpy(), loss_mask.numpy())

        if idx is None:
            loss_mask = torch.zeros_like(loss_mask)
            counts = (0, 0, 0)
        out: Dict[str, Any] = {"tokens": tokens, "labels": labels}
        if self.config.create_attention_mask:
            out["attention_mask"] = attention_mask
        out["loss_mask"] = loss_mask
        out["position_ids"] = position_ids
        # Plain ints, like BlendedDataset's "dataset_id": the default collate turns them into
        # int64 tensors of shape (batch,).
        out.update(zip(STATS_KEYS, counts))
        return out
