"""Tier 2 (single-process megatron-core on CPU, seconds): evaluating a checkpoint with the
library alone.

Scoring against log-softmax of the logits, perplexity against its closed form (a zeroed output
layer predicts the uniform distribution over the padded vocabulary) and against one long window,
and `python -m megatron_prealign.evaluate` on a saved checkpoint (its numbers must equal those of
the in-memory model). The English-Clone suite built on these is tested in tests/experiments.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

# The tiny SentencePiece tokenizer of tests/assets (conftest's data_* fixtures) has 400 pieces.
VOCAB_SIZE = 400


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~30x faster with one thread than with two on a loaded 2-core machine
    (OpenMP threads spin-wait for each other); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pgs():
    from megatron_prealign.evaluate.loading import single_process_group

    with single_process_group(seed=7) as groups:
        yield groups


def _model(pgs, seed=0):
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=VOCAB_SIZE)
    return build_model(cfg, ParallelConfig(), pgs), cfg


def test_continuation_logprobs_match_logits(pgs):
    from megatron_prealign.evaluate.scoring import continuation_logprobs
    from megatron_prealign.platform import compute_device

    model, _ = _model(pgs)
    model.eval()
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, VOCAB_SIZE, size=int(rng.integers(1, 9))).tolist(),
              rng.integers(0, VOCAB_SIZE, size=int(rng.integers(1, 4))).tolist()) for _ in range(11)]
    got = continuation_logprobs(model, items, batch_size=4)
    device = compute_device()
    with torch.no_grad():
        for (prompt, continuation), value in zip(items, got):
            ids = torch.tensor([prompt + continuation], device=device)
            logits = model(ids, torch.arange(ids.shape[1], device=device).unsqueeze(0), None)  # [1, s, V]
            logp = torch.log_softmax(logits.double(), dim=-1)[0]
            expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(continuation))
            assert value == pytest.approx(expected, abs=1e-4)


def test_perplexity_of_uniform_model_is_padded_vocab(pgs, data_prefixes):
    from megatron_prealign.evaluate.perplexity import heldout_perplexity

    model, cfg = _model(pgs)
    with torch.no_grad():
        model.output_layer.weight.zero_()
    result = heldout_perplexity(model, data_prefixes[0], seq_length=cfg.seq_length, max_tokens=300, batch_size=3)
    assert result["tokens"] == 300  # every token after the first predicted once, up to max_tokens
    assert result["ppl"] == pytest.approx(cfg.padded_vocab_size(1), rel=1e-5)


def test_perplexity_counts_each_token_once(pgs, data_prefixes):
    from megatron_prealign.evaluate.perplexity import heldout_perplexity, read_stream
    from megatron_prealign.evaluate.scoring import token_losses

    model, cfg = _model(pgs, seed=3)
    model.eval()
    stream = torch.from_numpy(read_stream(data_prefixes[1], 100))
    with torch.no_grad():
        # One window of 101 tokens in one forward (positions beyond 32 are fine for RoPE).
        direct = token_losses(model, stream[:-1].unsqueeze(0), stream[1:].unsqueeze(0)).mean().item()
    windows = heldout_perplexity(model, data_prefixes[1], seq_length=cfg.seq_length, max_tokens=100)
    assert windows["tokens"] == 100
    # Different context lengths give different losses; the averages must still be close.
    assert abs(windows["loss"] - direct) < 0.2


def test_cli_perplexity_of_a_checkpoint(pgs, data_prefixes, tmp_path, capsys):
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.evaluate.__main__ import main
    from megatron_prealign.evaluate.perplexity import heldout_perplexity

    model, cfg = _model(pgs, seed=5)
    root = tmp_path / "ckpt"
    save_checkpoint(root, model=model, state={"iteration": 4, "model": dataclasses.asdict(cfg)}, iteration=4,
                    with_rng=False)
    out = tmp_path / "ppl.json"
    assert main(["--load", str(root), "--data-path", f"a={data_prefixes[0]}", f"b={data_prefixes[1]}",
                 "--max-tokens", "200", "--output", str(out)]) == 0
    loaded = json.loads(out.read_text())
    assert loaded["iteration"] == 4 and set(loaded["perplexity"]) == {"a", "b"}
    for name, prefix in zip("ab", data_prefixes):
        direct = heldout_perplexity(model, prefix, seq_length=cfg.seq_length, max_tokens=200)
        assert loaded["perplexity"][name]["tokens"] == direct["tokens"] == 200
        assert loaded["perplexity"][name]["ppl"] == pytest.approx(direct["ppl"], rel=1e-6)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in printed] == [["perplexity", "a"], ["perplexity", "b"]]
    with pytest.raises(SystemExit) as exc:
        main(["--load", str(root), "--data-path", "a=/nonexistent/corpus"])
    assert exc.value.code == 2 and "/nonexistent/corpus.bin not found" in capsys.readouterr().err


def test_cli_refuses_data_the_checkpoint_cannot_read(pgs, tmp_path, capsys, data_tokenizer):
    """Each dataset is opened before the model loads: data of another tokenizer (its manifest
    says so) and ids outside the model's vocabulary are one error line each, exit code 2."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.data.preprocess import PreprocessConfig, preprocess
    from megatron_prealign.evaluate.__main__ import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("the house by the river\nthe old bridge\n", encoding="utf-8")
    ours = preprocess(PreprocessConfig(input=str(corpus), output_prefix=str(tmp_path / "p"),
                                       tokenizer_type="SentencePieceTokenizer",
                                       tokenizer_model=data_tokenizer.model_path, append_eod=True)).outputs["text"]
    foreign = str(tmp_path / "foreign")
    builder = IndexedDatasetBuilder(foreign + ".bin", dtype=np.uint16)
    builder.add_document(np.array([3, 4, 470, 5]), [4])  # another tool, a larger vocabulary
    builder.finalize(foreign + ".idx")

    model, cfg = _model(pgs, seed=5)
    root = tmp_path / "ckpt"
    save_checkpoint(root, model=model, state={"iteration": 4, "model": dataclasses.asdict(cfg),
                                              "tokenizer_fingerprint": "0" * 64}, iteration=4, with_rng=False)
    for prefix, message in ((ours, f"{ours}.json: {ours} was tokenized with tiny_sp.model"),
                            (foreign, f"{foreign}.bin holds token id 470, outside the model's vocabulary of 400")):
        with pytest.raises(SystemExit) as exc:
            main(["--load", str(root), "--data-path", prefix])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], err
