"""Tier 3 (real launcher, single process): continue PreAlign from a converted Hugging Face model.

A tiny random Llama (transformers, GQA) whose vocabulary is the test tokenizer's is converted
to a `release` checkpoint, then pretrained with the alignment pre-pass and code-switching for a
few iterations (--pretrained-checkpoint, --use-checkpoint-args), exported back to Hugging Face
format, loaded by transformers, and asked to generate.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests._launch import run, train_records


@pytest.mark.slow
def test_converted_llama_continues_with_prealign_and_exports(tmp_path, data_prefixes, data_lexicon_path):
    transformers = pytest.importorskip("transformers")
    from megatron_prealign.convert import convert_hf_to_mcore, convert_mcore_to_hf
    from tests.conftest import ASSETS

    config = transformers.LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    convert_hf_to_mcore(tmp_path / "hf", tmp_path / "converted")

    a, b = data_prefixes
    run(1, ["--pretrained-checkpoint", str(tmp_path / "converted"), "--use-checkpoint-args",
            "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4",
            "--lr", "1e-3", "--min-lr", "1e-4", "--data-path", a, "--split", "90,10,0",
            "--tokenizer-model", str(ASSETS / "tiny_sp.model"), "--lexicon", data_lexicon_path,
            "--codeswitch-ratio", "0.3", "--align-steps", "3", "--align-pairs-per-batch", "8",
            "--align-heldout-fraction", "0.3", "--log-interval", "1", "--eval-iters", "1",
            "--save", str(tmp_path / "ckpt"), "--metrics-log", str(tmp_path / "m.jsonl")],
        tmp_path / "run.log")
    records = train_records(tmp_path / "m.jsonl")
    assert sorted(records) == [1, 2, 3, 4]
    state = json.loads((tmp_path / "ckpt" / "iter_0000004" / "prealign_state.json").read_text())
    assert state["align_finished"] and state["model"]["num_query_groups"] == 2
    assert state["source"]["format"] == "huggingface"

    convert_mcore_to_hf(tmp_path / "ckpt", tmp_path / "exported")
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "exported")
    original = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    changed = [name for name, p in model.state_dict().items() if not torch.equal(p, original.state_dict()[name])]
    assert changed, "training did not change the exported weights"
    out = model.generate(torch.tensor([[5, 17, 42]]), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)
