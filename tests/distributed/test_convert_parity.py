"""Tier 3 (multi-process gloo): Hugging Face Llama / Mistral / Qwen2 / Qwen3 -> megatron_prealign
-> Hugging Face, and vocabulary extension of a converted model.

One spawn of two ranks does all the distributed work:
  rank 0 first converts tiny random models of each family (GQA 4 heads / 2 groups) with
  `convert_hf_to_mcore`, for target layouts TP=1/PP=2 and TP=2/PP=1 (the vocabulary
  padding differs: 384 vs 512 rows), and grows the Llama 3 model's vocabulary with
  `extend_checkpoint` (the library of `tools/extend_vocab.py`); then both ranks load them at TP=1, TP=2 and PP=2 (the two Llama 2
  models also each at the other TP's padding), compute logits for the same tokens as the HF
  models, and re-save the untied Llama 2 model from the TP=2 and PP=2 layouts as iter checkpoints.
The test process then exports every checkpoint back to HF and compares tensors bit for bit.

Variants: `untied` (Llama 2 shape, fp32, sharded safetensors), `tied` (saved in bf16), `llama3`
(llama3-scaled RoPE, with tokenizer files and a generation config to carry), `qwen2` (q/k/v
biases, tied), `qwen3` (QK norm, head_dim 24 != hidden/heads 16), `mistral` (sliding window 6 <
the 16 tokens compared, so the window matters).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._dist import run_on_ranks

VOCAB, SEQ, BATCH = 300, 16, 2
TOLERANCE = 1e-4
VARIANTS = ("untied", "tied", "llama3", "qwen2", "qwen3", "mistral")
TARGETS = {"tp1pp2": (1, 2), "tp2pp1": (2, 1)}
# (layout name, TP, PP, checkpoint it loads). The last two load a checkpoint padded for another
# TP degree: megatron-core loads embedding/output rows with a different padding (extra rows zero).
LAYOUTS = (("tp1", 1, 1, "tp1pp2"), ("tp2", 2, 1, "tp2pp1"), ("pp2", 1, 2, "tp1pp2"),
           ("tp2_from_tp1_target", 2, 1, "tp1pp2"), ("tp1_from_tp2_target", 1, 1, "tp2pp1"))
PADDED = {"tp1": 384, "tp2": 512, "pp2": 384, "tp2_from_tp1_target": 512, "tp1_from_tp2_target": 384}
CROSS_PADDING_VARIANTS = ("untied", "tied")
CARRIED = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
EXTENDED = "ext_llama3"  # the llama3 model (TP=1 target) with the vocabulary of tokenizer_ext/


@pytest.fixture(scope="module")
def transformers():
    # Imported here, not at module level: the spawned ranks import this module and need no
    # transformers (conversion reads safetensors directly).
    return pytest.importorskip("transformers")


def _hf_model(transformers, variant: str):
    """A tiny random model of the variant's family; weights drawn large enough that logits are O(1)."""
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=1, eos_token_id=2)
    configs = {
        "untied": lambda: transformers.LlamaConfig(**common, rope_theta=50000.0, rms_norm_eps=1e-5),
        "tied": lambda: transformers.LlamaConfig(**common, rope_theta=10000.0, rms_norm_eps=1e-6,
                                                 tie_word_embeddings=True),
        "llama3": lambda: transformers.LlamaConfig(**{**common, "max_position_embeddings": 16384}, rope_parameters={
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        "qwen2": lambda: transformers.Qwen2Config(**common, rope_theta=1000000.0, tie_word_embeddings=True),
        "qwen3": lambda: transformers.Qwen3Config(**common, head_dim=24, rope_theta=1000000.0),
        "mistral": lambda: transformers.MistralConfig(**common, sliding_window=6),
    }
    seeds = {v: i for i, v in enumerate(VARIANTS)}
    torch.manual_seed(seeds[variant])
    config = configs[variant]()
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            else:
                p.normal_(0, 0.1) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return model


def _logits(model, tokens, parallel, pgs) -> torch.Tensor | None:
    """Full-vocabulary logits on the last pipeline stage (None elsewhere), through
    megatron-core's forward-only schedule and the TP all-gather."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    def forward_step(data_iterator, chunk):
        batch = next(data_iterator)
        return chunk(batch, torch.arange(SEQ).expand(BATCH, SEQ), None), None

    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter([tokens]), model=[model],
            num_microbatches=1, seq_length=SEQ, micro_batch_size=BATCH, forward_only=True)
    if not parallel_state.is_pipeline_last_stage():
        return None
    return gather_from_tensor_model_parallel_region(outputs[0])


def _checkpoints(layout: str, target: str) -> dict[str, Path]:
    """Variant -> checkpoint root loaded at `layout`."""
    variants = VARIANTS if layout in ("tp1", "tp2", "pp2") else CROSS_PADDING_VARIANTS
    out = {v: Path(f"mc_{v}_{target}") for v in variants}
    if layout in ("tp1", "tp2", "pp2"):
        out[EXTENDED] = Path(EXTENDED)
    return out


def _convert_and_compare(rank, world_size, workdir):
    from megatron.core import parallel_state

    from megatron_prealign.checkpointing import load_checkpoint, read_checkpoint_state, save_checkpoint
    from megatron_prealign.convert import convert_hf_to_mcore
    from megatron_prealign.convert.vocab import extend_checkpoint
    from megatron_prealign.distributed import destroy_distributed, init_distributed
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model

    work = Path(workdir)
    if rank == 0:
        # Conversion is a world of one; rank 1 waits in init_distributed meanwhile.
        for variant in VARIANTS:
            for target, (tp, pp) in TARGETS.items():
                convert_hf_to_mcore(work / f"hf_{variant}", work / f"mc_{variant}_{target}",
                                    tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
        extend_checkpoint(work / "mc_llama3_tp1pp2", work / "tokenizer_ext", work / EXTENDED,
                          lexicon=work / "ext.lex")
    reference = torch.load(work / "reference.pt")
    out = {}
    for layout, tp, pp, target in LAYOUTS:
        parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
        pgs = init_distributed(parallel, seed=1234)
        for variant, root in _checkpoints(layout, target).items():
            root = work / root
            _, state = read_checkpoint_state(root)
            model = build_model(ModelConfig(**state["model"]), parallel, pgs).eval()
            load_checkpoint(root, model=model)
            if variant == "llama3" and layout == "tp1":
                out["llama3_inv_freq"] = model.rotary_pos_emb.inv_freq.cpu()
            logits = _logits(model, reference["tokens"], parallel, pgs)
            if logits is not None:
                out[(layout, variant, "padded_vocab")] = logits.shape[-1]
                source = "llama3" if variant == EXTENDED else variant
                diff = (logits[..., :VOCAB] - reference[source]).abs().max().item()
                out[(layout, variant, "max_abs_diff")] = diff
            if variant == "untied" and layout in ("tp2", "pp2"):
                save_checkpoint(work / f"resaved_{layout}", model=model, iteration=3, with_rng=False,
                                state={**state, "iteration": 3})
        out[(layout, "pp_last_stage")] = parallel_state.is_pipeline_last_stage()
    destroy_distributed()
    return out


def _hf_tensors(path):
    from megatron_prealign.convert.files import read_hf_state

    return read_hf_state(path)


def _tokenizer_and_lexicon(work: Path, base_dir: Path) -> None:
    """A byte-level BPE tokenizer of exactly VOCAB ids for the llama3 model (English, with its
    special tokens last, as Llama 3's), its extension with German pieces, and an en-de lexicon
    compiled with the extended tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from megatron_prealign.convert.vocab import extend_tokenizer
    from megatron_prealign.lexicon import compile_lexicon, read_dictionary
    from tests.conftest import ASSETS, DATA_DICTIONARY

    lines = [line for line in (ASSETS / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    english = [line for line in lines if line.isascii()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(english, trainers.BpeTrainer(
        vocab_size=VOCAB - 2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    assert tok.get_vocab_size() == VOCAB
    tok.save(str(base_dir / "tokenizer.json"))
    (base_dir / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}))
    (work / "english.txt").write_text("\n".join(english), encoding="utf-8")
    extend_tokenizer(base_dir, work / "tokenizer_ext", new_language_text=ASSETS / "tiny_de.txt",
                     new_language_vocab_size=400, preserve_text=work / "english.txt")
    from megatron_prealign.convert.vocab import load_tokenizer

    (work / "dict.muse").write_text(DATA_DICTIONARY, encoding="utf-8")
    compile_lexicon(read_dictionary(work / "dict.muse"), load_tokenizer(work / "tokenizer_ext")).save(work / "ext.lex")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, transformers):
    work = tmp_path_factory.mktemp("convert")
    reference = {"tokens": torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(3))}
    for variant in VARIANTS:
        model = _hf_model(transformers, variant)
        if variant == "tied":
            # Saved in bf16; the reference computes in fp32 from the bf16-rounded weights (not
            # from a bf16-cast model, whose RoPE inv_freq buffer would be rounded too).
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
        with torch.no_grad():
            reference[variant] = model(reference["tokens"]).logits
        if variant == "untied":
            # Sharded safetensors with an index, as large checkpoints are published.
            model.save_pretrained(work / "hf_untied", max_shard_size="100KB")
        elif variant == "tied":
            model.to(torch.bfloat16).save_pretrained(work / "hf_tied")
        else:
            model.save_pretrained(work / f"hf_{variant}")
        if variant == "llama3":
            reference["llama3_inv_freq"] = model.model.rotary_emb.inv_freq.clone()
            _tokenizer_and_lexicon(work, work / "hf_llama3")
        assert reference[variant].std() > 0.3, "logits too small for the tolerance to mean anything"
    assert (work / "hf_llama3" / "generation_config.json").is_file()
    torch.save(reference, work / "reference.pt")
    results = run_on_ranks(_convert_and_compare, 2, str(work))
    merged = {}
    for result in results:
        merged.update({k: v for k, v in result.items() if k[-1] != "pp_last_stage"})
    return {"work": work, "results": merged, "per_rank": results, "reference": reference}


def test_sources_are_what_the_test_claims(runs):
    work = runs["work"]
    assert (work / "hf_untied" / "model.safetensors.index.json").is_file()
    assert len(list((work / "hf_untied").glob("model-*.safetensors"))) > 1
    tied = _hf_tensors(work / "hf_tied")
    assert "lm_head.weight" not in tied
    assert all(t.dtype == torch.bfloat16 for t in tied.values())
    assert "model.layers.0.self_attn.q_proj.bias" in _hf_tensors(work / "hf_qwen2")
    assert _hf_tensors(work / "hf_qwen3")["model.layers.0.self_attn.q_norm.weight"].shape == (24,)


@pytest.mark.parametrize("layout, variant", [(layout, variant) for layout in PADDED for variant in VARIANTS
                                             if layout in ("tp1", "tp2", "pp2") or variant in CROSS_PADDING_VARIANTS])
def test_converted_model_matches_hf_logits(runs, layout, variant):
    results = runs["results"]
    assert results[(layout, variant, "padded_vocab")] == PADDED[layout]
    diff = results[(layout, variant, "max_abs_diff")]
    print(f"{layout} {variant}: max |logits - HF| = {diff:.3e}")
    assert diff <= TOLERANCE


def test_llama3_rope_frequencies_are_transformers_exactly(runs):
    ours = runs["per_rank"][0]["llama3_inv_freq"]
    theirs = runs["reference"]["llama3_inv_freq"]
    assert torch.equal(ours, theirs)
    # The scaling is in effect: the lowest frequency is divided by the factor.
    plain = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    assert torch.equal(ours[-1], plain[-1] / 8) and torch.equal(ours[0], plain[0])


def test_sliding_window_matters_for_the_mistral_variant(runs, transformers):
    """Without its window the Mistral reference would differ: the parity above tests the window."""
    model = _hf_model(transformers, "mistral")
    model.config.sliding_window = None
    with torch.no_grad():
        full = model(runs["reference"]["tokens"]).logits
    assert (full - runs["reference"]["mistral"]).abs().max() > 100 * TOLERANCE


def test_pp2_logits_come_from_the_last_stage_only(runs):
    assert [r[("pp2", "pp_last_stage")] for r in runs["per_rank"]] == [False, True]


def _export(load, out):
    from megatron_prealign.convert import convert_mcore_to_hf

    convert_mcore_to_hf(load, out)
    return out


@pytest.mark.parametrize("variant, checkpoint", [
    ("untied", "mc_untied_tp2pp1"), ("untied", "mc_untied_tp1pp2"),
    ("untied", "resaved_tp2"), ("untied", "resaved_pp2"),
    ("tied", "mc_tied_tp1pp2"), ("tied", "mc_tied_tp2pp1"),
    ("llama3", "mc_llama3_tp2pp1"), ("qwen2", "mc_qwen2_tp2pp1"), ("qwen3", "mc_qwen3_tp1pp2"),
    ("mistral", "mc_mistral_tp2pp1"),
])
def test_round_trip_is_bit_identical(runs, transformers, variant, checkpoint):
    work = runs["work"]
    exported = _export(work / checkpoint, work / f"back_{checkpoint}")
    source, back = _hf_tensors(work / f"hf_{variant}"), _hf_tensors(exported)
    assert back.keys() == source.keys()
    for key, tensor in source.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    original, config = (transformers.AutoConfig.from_pretrained(path).to_dict() for path in (work / f"hf_{variant}", exported))
    original.pop("_name_or_path"), config.pop("_name_or_path")
    assert config == original


def test_tokenizer_files_and_generation_config_are_carried_both_ways(runs):
    work = runs["work"]
    assert sorted(p.name for p in (work / "mc_llama3_tp1pp2" / "hf_assets").iterdir()) == sorted(CARRIED)
    exported = work / "back_mc_llama3_tp1pp2"
    if not exported.is_dir():
        _export(work / "mc_llama3_tp1pp2", exported)
    for name in CARRIED:
        assert (exported / name).read_bytes() == (work / "hf_llama3" / name).read_bytes(), name


def test_exported_model_loads_in_transformers_with_the_same_logits(runs, transformers):
    work = runs["work"]
    exported = work / "back_resaved_pp2"
    if not exported.is_dir():
        _export(work / "resaved_pp2", exported)
    model = transformers.LlamaForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        logits = model(runs["reference"]["tokens"]).logits
    assert torch.equal(logits, runs["reference"]["untied"])


# ---------------------------------------------------------------------- vocabulary extension


@pytest.mark.parametrize("layout", ["tp1", "tp2", "pp2"])
def test_extended_model_keeps_the_logits_of_old_tokens(runs, layout):
    """Before any training, text of old tokens gets the original model's logits (over the old
    vocabulary) at every layout."""
    results = runs["results"]
    extension = json.loads((runs["work"] / "tokenizer_ext" / "vocab_extension.json").read_text())
    assert extension["vocab_size"] > VOCAB
    multiple = 128 * (2 if layout == "tp2" else 1)
    assert results[(layout, EXTENDED, "padded_vocab")] == -(-extension["vocab_size"] // multiple) * multiple
    diff = results[(layout, EXTENDED, "max_abs_diff")]
    print(f"{layout} extended: max |logits[:old vocab] - HF| = {diff:.3e}")
    assert diff <= TOLERANCE


def _expected_new_rows(weight: torch.Tensor, lexicon, base: int, size: int) -> torch.Tensor:
    """The initialisation rule written out directly: per new id, the mean over the lexicon entries
    containing it of the mean over their (old-id) translations of the translation's mean row;
    the mean of the old rows for ids in no such entry."""
    old = weight[:base].double()
    rows = []
    for token in range(base, size):
        per_entry = []
        for entry in range(lexicon.num_entries):
            if token not in lexicon.entry_tokens(entry).tolist():
                continue
            means = [old[lexicon.entry_tokens(t).tolist()].mean(0) for t in lexicon.translations(entry)
                     if max(lexicon.entry_tokens(t).tolist()) < base]
            if means:
                per_entry.append(torch.stack(means).mean(0))
        rows.append(torch.stack(per_entry).mean(0) if per_entry else old.mean(0))
    return torch.stack(rows).to(weight.dtype)


def test_extended_rows_follow_the_initialisation_rule(runs):
    from megatron_prealign.convert.files import read_model_checkpoint
    from megatron_prealign.convert.vocab import load_tokenizer
    from megatron_prealign.lexicon import load_lexicon

    work = runs["work"]
    _, _, cfg, before = read_model_checkpoint(work / "mc_llama3_tp1pp2")
    _, state, new_cfg, after = read_model_checkpoint(work / EXTENDED)
    tokenizer = load_tokenizer(work / "tokenizer_ext")
    lexicon = load_lexicon(work / "ext.lex", tokenizer)
    assert new_cfg.vocab_size == tokenizer.vocab_size > cfg.vocab_size == VOCAB
    info = state["vocab_extension"]
    assert info["rows_from_dictionary"] > 0 and info["rows_from_mean"] > 0
    assert state["tokenizer_fingerprint"] == tokenizer.fingerprint
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        assert torch.equal(after[name][:VOCAB], before[name][:VOCAB]), name
        expected = _expected_new_rows(before[name], lexicon, VOCAB, new_cfg.vocab_size)
        torch.testing.assert_close(after[name][VOCAB:new_cfg.vocab_size], expected, rtol=1e-6, atol=1e-7)
        assert not after[name][new_cfg.vocab_size:].any(), "padding rows must stay zero"
    # A new piece that is a whole dictionary word with one translation starts at that word's mean row.
    embed_before, embed_after = before["embedding.word_embeddings.weight"], after["embedding.word_embeddings.weight"]
    occurrences = {}
    for entry in range(lexicon.num_entries):
        for token in set(lexicon.entry_tokens(entry).tolist()):
            occurrences.setdefault(token, []).append(entry)
    words = [(tokens[0], lexicon.entry_tokens(int(lexicon.translations(e)[0])))
             for e in range(lexicon.num_entries) if len(tokens := lexicon.entry_tokens(e)) == 1
             and tokens[0] >= VOCAB and len(occurrences[tokens[0]]) == 1 and len(lexicon.translations(e)) == 1]
    assert words, "the extension should add at least one whole dictionary word"
    for token, translation in words:
        assert translation.max() < VOCAB
        torch.testing.assert_close(embed_after[token], embed_before[translation].mean(0))
    for name in after:
        if name not in ("embedding.word_embeddings.weight", "output_layer.weight"):
            assert torch.equal(after[name], before[name]), name


def test_extended_model_exports_with_its_tokenizer(runs, transformers):
    work = runs["work"]
    exported = _export(work / EXTENDED, work / "back_extended")
    model = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert model.config.vocab_size == len(tokenizer) > VOCAB
    assert (exported / "tokenizer.json").read_bytes() == (work / "tokenizer_ext" / "tokenizer.json").read_bytes()
    assert (exported / "generation_config.json").read_bytes() == (work / "hf_llama3" / "generation_config.json").read_bytes()
    with torch.no_grad():
        logits = model(runs["reference"]["tokens"]).logits
    torch.testing.assert_close(logits[..., :VOCAB], runs["reference"]["llama3"], rtol=0, atol=TOLERANCE)
    ids = tokenizer("Die Kinder gehen über die Brücke", return_tensors="pt")["input_ids"]
    assert int(ids.max()) >= VOCAB, "the German text should use new pieces"
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)
    assert np.all(out.numpy() < model.config.vocab_size)
