"""Tier 2 (single-process megatron-core on CPU, seconds): the evaluation suite.

Scoring against log-softmax of the logits, perplexity against its closed form (a zeroed output
layer predicts the uniform distribution over the padded vocabulary), knowledge and transfer
evaluation on tiny GPTModels trained here on the English facts / month sequences only (they must
answer in English; in the clone they never saw they stay below that), and `python -m megatron_prealign.evaluate`
on a saved checkpoint (its numbers must equal those of the in-memory model).
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from megatron_prealign.evaluate.english_clone import load_setting
from megatron_prealign.evaluate.knowledge import KnowledgeSet, evaluate_knowledge
from megatron_prealign.evaluate.transfer import TransferProbe, evaluate_transfer
from tests.unit.test_english_clone_setting import VOCAB, build_tiny_setting


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train ~30x faster with one thread than with two on a loaded 2-core machine
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


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    return load_setting(build_tiny_setting(tmp_path_factory.mktemp("eval_setting")))


@pytest.fixture(scope="module")
def tokenizer(setting):
    from megatron_prealign.lexicon import build_tokenizer

    return build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))


def _model(pgs, seed=0):
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=2 * VOCAB)
    return build_model(cfg, ParallelConfig(), pgs), cfg


def test_continuation_logprobs_match_logits(pgs):
    from megatron_prealign.evaluate.scoring import continuation_logprobs

    model, _ = _model(pgs)
    model.eval()
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, 2 * VOCAB, size=int(rng.integers(1, 9))).tolist(),
              rng.integers(0, 2 * VOCAB, size=int(rng.integers(1, 4))).tolist()) for _ in range(11)]
    got = continuation_logprobs(model, items, batch_size=4)
    with torch.no_grad():
        for (prompt, continuation), value in zip(items, got):
            ids = torch.tensor([prompt + continuation])
            logits = model(ids, torch.arange(ids.shape[1]).unsqueeze(0), None)  # [1, s, V]
            logp = torch.log_softmax(logits.double(), dim=-1)[0]
            expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(continuation))
            assert value == pytest.approx(expected, abs=1e-4)


def test_perplexity_of_uniform_model_is_padded_vocab(pgs, setting):
    from megatron_prealign.evaluate.perplexity import heldout_perplexity

    model, cfg = _model(pgs)
    with torch.no_grad():
        model.output_layer.weight.zero_()
    result = heldout_perplexity(model, setting.prefix("en_eval"), seq_length=cfg.seq_length, max_tokens=300,
                                batch_size=3)
    assert result["tokens"] == 300  # every token after the first predicted once, up to max_tokens
    assert result["ppl"] == pytest.approx(cfg.padded_vocab_size(1), rel=1e-5)


def test_perplexity_counts_each_token_once(pgs, setting):
    from megatron_prealign.evaluate.perplexity import heldout_perplexity, read_stream
    from megatron_prealign.evaluate.scoring import token_losses

    model, cfg = _model(pgs, seed=3)
    model.eval()
    stream = torch.from_numpy(read_stream(setting.prefix("clone_eval"), 100))
    with torch.no_grad():
        # One window of 101 tokens in one forward (positions beyond 32 are fine for RoPE).
        direct = token_losses(model, stream[:-1].unsqueeze(0), stream[1:].unsqueeze(0)).mean().item()
    windows = heldout_perplexity(model, setting.prefix("clone_eval"), seq_length=cfg.seq_length, max_tokens=100)
    assert windows["tokens"] == 100
    # Different context lengths give different losses; the averages must still be close.
    assert abs(windows["loss"] - direct) < 0.2


def _train_on(model, token_docs, steps, seq_length=32, lr=3e-3, seed=0):
    """Plain next-token training on the concatenated documents (enough to memorize them)."""
    stream = torch.tensor([t for doc in token_docs for t in doc], dtype=torch.int64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq_length - 1, (16,), generator=generator)
        batch = torch.stack([stream[s : s + seq_length + 1] for s in starts])
        positions = torch.arange(seq_length).unsqueeze(0).expand(16, seq_length)
        loss = model(batch[:, :-1], positions, None, labels=batch[:, 1:]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def fact_model(pgs, setting, tokenizer):
    """A tiny model trained on the English fact sentences only."""
    kset = KnowledgeSet.load(setting.path(setting.knowledge))
    docs = [tokenizer.encode(text) + [tokenizer.eod] for text in kset.training_texts()]
    model, _ = _model(pgs, seed=1)
    rng = np.random.default_rng(0)
    _train_on(model, [docs[i] for i in rng.permutation(np.tile(np.arange(len(docs)), 20))], steps=150)
    return model


def test_knowledge_recall_in_english_not_in_unseen_clone(fact_model, setting, tokenizer):
    kset = KnowledgeSet.load(setting.path(setting.knowledge))
    english = evaluate_knowledge(fact_model, tokenizer, kset)
    clone = evaluate_knowledge(fact_model, tokenizer, kset, clone_offset=VOCAB)
    assert english["n"] == clone["n"] == len(kset.facts)
    assert english["chance"] == pytest.approx(1 / 3)
    assert english["accuracy"] >= 0.9, english
    assert english["mean_rank"] < clone["mean_rank"]
    assert english["margin"] > clone["margin"] + 1.0
    assert set(english["per_relation"]) == {"role", "home"}
    # Asked in the clone it never saw, the model cannot know which English value to give either.
    mixed = evaluate_knowledge(fact_model, tokenizer, kset, clone_offset=VOCAB, answer_offset=0)
    assert mixed["n"] == english["n"] and mixed["margin"] < english["margin"] - 1.0


def test_transfer_skill_learned_in_english(pgs, setting, tokenizer):
    probe = TransferProbe.load(setting.path(setting.transfer))
    docs = [tokenizer.encode(text) + [tokenizer.eod] for text in probe.training_texts()]
    model, _ = _model(pgs, seed=2)
    _train_on(model, docs, steps=150)
    english = evaluate_transfer(model, tokenizer, probe)
    clone = evaluate_transfer(model, tokenizer, probe, clone_offset=VOCAB)
    assert english["accuracy"] >= 0.9, english
    assert english["chance"] == pytest.approx(1 / 12) and english["n"] == 108
    assert set(english["per_step"]) == {"1", "2", "3"}
    assert clone["accuracy"] < english["accuracy"] and clone["margin"] < english["margin"]


def test_suite_and_cli_on_a_checkpoint(pgs, setting, fact_model, tmp_path, capsys):
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.evaluate.__main__ import main
    from megatron_prealign.evaluate.suite import EvalConfig, evaluate_model

    cfg = dataclasses.replace(_model(pgs)[1])
    root = tmp_path / "ckpt"
    state = {"iteration": 5, "model": dataclasses.asdict(cfg),
             "tokenizer_fingerprint": setting.stats["tokenizer_fingerprint"]}
    save_checkpoint(root, model=fact_model, state=state, iteration=5, with_rng=False)
    direct = evaluate_model(fact_model, setting, EvalConfig(max_tokens=256, alignment_words=40), pgs,
                            seq_length=cfg.seq_length)
    out = tmp_path / "eval.json"
    assert main(["--load", str(root), "--setting", setting.root, "--max-tokens", "256", "--alignment-words", "40",
                 "--output", str(out), "--data-path", f"extra={setting.prefix('en_eval')}"]) == 0
    loaded = json.loads(out.read_text())
    assert loaded["iteration"] == 5
    for lang in ("english", "clone"):
        assert loaded["perplexity"][lang]["ppl"] == pytest.approx(direct["perplexity"][lang]["ppl"], rel=1e-6)
        assert loaded["knowledge"][lang]["accuracy"] == direct["knowledge"][lang]["accuracy"]
        assert loaded["transfer"][lang]["accuracy"] == direct["transfer"][lang]["accuracy"]
    assert loaded["perplexity"]["extra"]["ppl"] == pytest.approx(direct["perplexity"]["english"]["ppl"], rel=1e-6)
    slots = ["embedding", "layer_1", "layer_2", "output_embedding"]
    for words in ("dictionary", "heldout", "names"):
        assert list(loaded["alignment"][words]) == slots
        assert all(math.isfinite(v) for v in loaded["alignment"][words].values())
    printed = capsys.readouterr().out
    assert "knowledge   english" in printed and "alignment   heldout" in printed


def test_checkpoint_of_another_tokenizer_is_refused(pgs, setting, fact_model, tmp_path):
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.evaluate.suite import EvalConfig, evaluate_checkpoint

    cfg = _model(pgs)[1]
    root = tmp_path / "ckpt"
    save_checkpoint(root, model=fact_model, state={"iteration": 1, "model": dataclasses.asdict(cfg),
                                                   "tokenizer_fingerprint": "0" * 64}, iteration=1, with_rng=False)
    with pytest.raises(ValueError, match="another tokenizer|trained with tokenizer"):
        evaluate_checkpoint(root, setting, EvalConfig(tasks=("perplexity",)), pgs)


def test_eval_config_validation():
    from megatron_prealign.evaluate.suite import EvalConfig

    with pytest.raises(ValueError, match="--tasks"):
        EvalConfig(tasks=("perplexity", "bleu"))
