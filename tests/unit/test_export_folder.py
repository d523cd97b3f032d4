"""Tier 2: a Hugging Face export of a run's checkpoint is a complete model folder: weights,
config, the run's tokenizer (the checkpoint records it), plain file modes, and
`AutoTokenizer`/`AutoModelForCausalLM` load it and generate."""
from __future__ import annotations

import dataclasses
import os
import stat

import pytest
import torch

from tests.conftest import ASSETS

TOK = str(ASSETS / "tiny_sp.model")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.convert import convert_mcore_to_hf
    from megatron_prealign.distributed import single_process_world
    from megatron_prealign.lexicon import build_tokenizer
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.parallel import ParallelConfig

    root = tmp_path_factory.mktemp("export")
    tokenizer = build_tokenizer("SentencePieceTokenizer", TOK)
    cfg = ModelConfig(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=64,
                      seq_length=32, vocab_size=tokenizer.vocab_size)
    with single_process_world(seed=2) as pgs:
        model = build_model(cfg, ParallelConfig(), pgs)
        state = {"model": dataclasses.asdict(cfg), "iteration": 3, "tokenizer_fingerprint": tokenizer.fingerprint,
                 "config": {"data": {"tokenizer_type": "GPTSentencePieceTokenizer", "tokenizer_model": TOK}}}
        save_checkpoint(root / "ckpt", model=model, state=state, iteration=3, pg_collection=pgs)
    out = convert_mcore_to_hf(root / "ckpt", root / "hf")
    return out, tokenizer


def test_export_holds_the_runs_tokenizer_with_plain_file_modes(export):
    out, _ = export
    names = sorted(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    modes = {name: stat.S_IMODE(os.stat(out / name).st_mode) for name in names}
    assert len(set(modes.values())) == 1, modes


def test_auto_classes_load_the_export_encode_like_the_run_and_generate(export):
    import transformers

    out, ours = export
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    lines = [line for line in (ASSETS / "tiny_corpus.txt").read_text().splitlines() if line.strip()]
    lines += ["  two  spaces, ünïcödé 123\nand a new line  "]
    for line in lines:
        assert hf_tokenizer(line)["input_ids"] == ours.encode(line), line
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    prompt = hf_tokenizer("The ship", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=ours.pad)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5
    assert isinstance(hf_tokenizer.decode(generated[0]), str)
