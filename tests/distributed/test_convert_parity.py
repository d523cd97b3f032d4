"""Tier 3 (multi-process gloo): Hugging Face Llama -> megatron_prealign -> Hugging Face.

One spawn of two ranks does all the distributed work:
  rank 0 first converts two tiny random Llamas (GQA 4 heads / 2 groups; one untied fp32 model in
  sharded safetensors, one tied model saved in bf16) with `convert_hf_to_mcore`, for
  target layouts TP=1/PP=2 and TP=2/PP=1 (the vocabulary padding differs: 384 vs 512 rows);
  then both ranks load them at TP=1, TP=2 and PP=2 (and each at the other TP's padding), compute
  logits for the same tokens as the HF models, and re-save the untied model from the TP=2 and
  PP=2 layouts as iter checkpoints.
The test process then exports every checkpoint back to HF (`convert_mcore_to_hf`) and compares
tensors bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._dist import run_on_ranks

VOCAB, SEQ, BATCH = 300, 16, 2
TOLERANCE = 1e-4
VARIANTS = ("untied", "tied")
TARGETS = {"tp1pp2": (1, 2), "tp2pp1": (2, 1)}
# (layout name, TP, PP, checkpoint it loads). The last two load a checkpoint padded for another
# TP degree: megatron-core loads embedding/output rows with a different padding (extra rows zero).
LAYOUTS = (("tp1", 1, 1, "tp1pp2"), ("tp2", 2, 1, "tp2pp1"), ("pp2", 1, 2, "tp1pp2"),
           ("tp2_from_tp1_target", 2, 1, "tp1pp2"), ("tp1_from_tp2_target", 1, 1, "tp2pp1"))
PADDED = {"tp1": 384, "tp2": 512, "pp2": 384, "tp2_from_tp1_target": 512, "tp1_from_tp2_target": 384}


@pytest.fixture(scope="module")
def transformers():
    # Imported here, not at module level: the spawned ranks import this module and need no
    # transformers (conversion reads safetensors directly).
    return pytest.importorskip("transformers")


def _hf_model(transformers, variant: str):
    """A tiny random Llama; weights drawn large enough that logits are O(1)."""
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=50000.0 if variant == "untied" else 10000.0,
        rms_norm_eps=1e-5 if variant == "untied" else 1e-6,
        tie_word_embeddings=variant == "tied", bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0 if variant == "untied" else 1)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
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


def _convert_and_compare(rank, world_size, workdir):
    from megatron.core import parallel_state

    from megatron_prealign.checkpointing import load_checkpoint, read_checkpoint_state, save_checkpoint
    from megatron_prealign.convert import convert_hf_to_mcore
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
    reference = torch.load(work / "reference.pt")
    out = {}
    for layout, tp, pp, target in LAYOUTS:
        parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
        pgs = init_distributed(parallel, seed=1234)
        for variant in VARIANTS:
            root = work / f"mc_{variant}_{target}"
            _, state = read_checkpoint_state(root)
            model = build_model(ModelConfig(**state["model"]), parallel, pgs).eval()
            load_checkpoint(root, model=model)
            logits = _logits(model, reference["tokens"], parallel, pgs)
            if logits is not None:
                out[(layout, variant, "padded_vocab")] = logits.shape[-1]
                diff = (logits[..., :VOCAB] - reference[variant]).abs().max().item()
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory, transformers):
    work = tmp_path_factory.mktemp("convert")
    reference = {"tokens": torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(3))}
    for variant in VARIANTS:
        model = _hf_model(transformers, variant)
        if variant == "untied":
            # Sharded safetensors with an index, as large checkpoints are published.
            model.save_pretrained(work / "hf_untied", max_shard_size="100KB")
        else:
            # Saved in bf16; the reference computes in fp32 from the bf16-rounded weights (not
            # from a bf16-cast model, whose RoPE inv_freq buffer would be rounded too).
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).float())
        with torch.no_grad():
            reference[variant] = model(reference["tokens"]).logits
        if variant == "tied":
            model.to(torch.bfloat16).save_pretrained(work / "hf_tied")
        assert reference[variant].std() > 0.3, "logits too small for the tolerance to mean anything"
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


@pytest.mark.parametrize("layout", list(PADDED))
@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_model_matches_hf_logits(runs, layout, variant):
    results = runs["results"]
    assert results[(layout, variant, "padded_vocab")] == PADDED[layout]
    diff = results[(layout, variant, "max_abs_diff")]
    print(f"{layout} {variant}: max |logits - HF| = {diff:.3e}")
    assert diff <= TOLERANCE


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
])
def test_round_trip_is_bit_identical(runs, transformers, variant, checkpoint):
    work = runs["work"]
    exported = _export(work / checkpoint, work / f"back_{checkpoint}")
    source, back = _hf_tensors(work / f"hf_{variant}"), _hf_tensors(exported)
    assert back.keys() == source.keys()
    for key, tensor in source.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    original = transformers.LlamaConfig.from_pretrained(work / f"hf_{variant}").to_dict()
    assert transformers.LlamaConfig.from_pretrained(exported).to_dict() == original


def test_exported_model_loads_in_transformers_with_the_same_logits(runs, transformers):
    work = runs["work"]
    exported = work / "back_resaved_pp2"
    if not exported.is_dir():
        _export(work / "resaved_pp2", exported)
    model = transformers.LlamaForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        logits = model(runs["reference"]["tokens"]).logits
    assert torch.equal(logits, runs["reference"]["untied"])
