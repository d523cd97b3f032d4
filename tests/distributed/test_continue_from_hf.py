"""Tier 3 (real launcher, single process): add a language to a converted Hugging Face model and
continue PreAlign from it.

A tiny random Llama-3-style model (transformers: GQA, llama3-scaled RoPE) whose vocabulary is the
test tokenizer's is converted to a `release` checkpoint; the tokenizer gets German pieces
(`tools/extend_vocab.py tokenizer`, English text preserved), a lexicon is compiled with the
extended tokenizer, and the model's vocabulary grows to it (`tools/extend_vocab.py model`,
rows initialised from the dictionary). The extended model is then pretrained with the alignment
pre-pass and code-switching for a few iterations (--pretrained-checkpoint, --use-checkpoint-args)
on English and German text, exported back to Hugging Face format with its tokenizer, loaded by
transformers, and asked to continue a German prompt.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests._launch import run, train_records



@pytest.mark.slow
def test_converted_llama3_with_a_new_language_continues_with_prealign_and_exports(
        tmp_path, data_corpus_lines, data_write_corpus):
    transformers = pytest.importorskip("transformers")
    from megatron_prealign.convert import convert_hf_to_mcore, convert_mcore_to_hf
    from megatron_prealign.convert.vocab import extend_checkpoint, extend_tokenizer, load_tokenizer
    from megatron_prealign.lexicon import compile_lexicon, load_lexicon, read_dictionary
    from tests.conftest import ASSETS, DATA_DICTIONARY

    config = transformers.LlamaConfig(
        vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16384, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    convert_hf_to_mcore(tmp_path / "hf", tmp_path / "converted")

    english = [line for line in data_corpus_lines if line.isascii()]
    (tmp_path / "english.txt").write_text("\n".join(english), encoding="utf-8")
    extend_tokenizer(ASSETS / "tiny_sp.model", tmp_path / "tok_de", new_language_text=ASSETS / "tiny_de.txt",
                     new_language_vocab_size=150, preserve_text=tmp_path / "english.txt")
    tokenizer = load_tokenizer(tmp_path / "tok_de")
    (tmp_path / "en_de.muse").write_text(DATA_DICTIONARY, encoding="utf-8")
    compile_lexicon(read_dictionary(tmp_path / "en_de.muse"), tokenizer).save(tmp_path / "en_de.lex")
    extend_checkpoint(tmp_path / "converted", tmp_path / "tok_de", tmp_path / "extended", lexicon=tmp_path / "en_de.lex")

    lexicon = load_lexicon(tmp_path / "en_de.lex", tokenizer)
    german = (ASSETS / "tiny_de.txt").read_text(encoding="utf-8").splitlines()
    data = data_write_corpus(tmp_path / "data_text_document", (english + german) * 2, tokenizer, lexicon)
    run(1, ["--pretrained-checkpoint", str(tmp_path / "extended"), "--use-checkpoint-args",
            "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "4",
            "--lr", "1e-3", "--min-lr", "1e-4", "--data-path", data, "--split", "90,10,0",
            "--tokenizer-model", str(tmp_path / "tok_de" / "tokenizer.model"), "--lexicon", str(tmp_path / "en_de.lex"),
            "--codeswitch-ratio", "0.3", "--align-steps", "3", "--align-pairs-per-batch", "8",
            "--align-heldout-fraction", "0.3", "--log-interval", "1", "--eval-iters", "1",
            "--save", str(tmp_path / "ckpt"), "--metrics-log", str(tmp_path / "m.jsonl")],
        tmp_path / "run.log")
    records = train_records(tmp_path / "m.jsonl")
    assert sorted(records) == [1, 2, 3, 4]
    assert sum(r["switch_rate"] for r in records.values()) > 0, "no dictionary word was code-switched"
    state = json.loads((tmp_path / "ckpt" / "iter_0000004" / "prealign_state.json").read_text())
    assert state["align_finished"] and state["model"]["num_query_groups"] == 2
    assert state["model"]["use_rope_scaling"] and state["model"]["rope_scaling_factor"] == 32.0
    assert state["model"]["vocab_size"] == tokenizer.vocab_size > 400
    assert state["source"]["format"] == "huggingface"
    assert state["tokenizer_fingerprint"] == tokenizer.fingerprint

    convert_mcore_to_hf(tmp_path / "ckpt", tmp_path / "exported")
    assert (tmp_path / "exported" / "tokenizer.model").read_bytes() == (tmp_path / "tok_de" / "tokenizer.model").read_bytes()
    model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "exported")
    assert model.config.vocab_size == tokenizer.vocab_size
    assert model.config.rope_parameters["rope_type"] == "llama3"
    original = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    exported = model.state_dict()
    changed = [name for name, p in original.items() if name not in ("model.embed_tokens.weight", "lm_head.weight")
               and not torch.equal(exported[name], p)]
    assert changed, "training did not change the exported weights"
    prompt = tokenizer.encode("Die Kinder gehen über die Brücke")
    assert max(prompt) >= 400, "the German prompt should use new pieces"
    out = model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, len(prompt) + 5)
