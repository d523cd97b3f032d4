"""Tier 2 (single-process megatron-core on CPU, seconds): the English-Clone evaluation suite.

Knowledge and transfer evaluation on tiny GPTModels trained here on the English facts / month
sequences only (they must answer in English; in the clone they never saw they stay below that),
and `python -m prealign_experiments.english_clone.evaluate` on a saved checkpoint (its numbers
must equal those of the in-memory model). Scoring and perplexity themselves are library code,
tested in tests/unit/test_evaluate.py.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from prealign_experiments.english_clone.knowledge import KnowledgeSet, evaluate_knowledge
from prealign_experiments.english_clone.setting import load_setting
from prealign_experiments.english_clone.transfer import TransferProbe, evaluate_transfer
from tests.experiments.test_english_clone_setting import VOCAB, build_tiny_setting


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
    from megatron_prealign.distributed import ParallelConfig
    from megatron_prealign.model import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=2 * VOCAB)
    return build_model(cfg, ParallelConfig(), pgs), cfg


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
    from prealign_experiments.english_clone.evaluate import main
    from prealign_experiments.english_clone.suite import EvalConfig, evaluate_model

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
    from prealign_experiments.english_clone.suite import EvalConfig, evaluate_checkpoint

    cfg = _model(pgs)[1]
    root = tmp_path / "ckpt"
    save_checkpoint(root, model=fact_model, state={"iteration": 1, "model": dataclasses.asdict(cfg),
                                                   "tokenizer_fingerprint": "0" * 64}, iteration=1, with_rng=False)
    with pytest.raises(ValueError, match="another tokenizer|trained with tokenizer"):
        evaluate_checkpoint(root, setting, EvalConfig(tasks=("perplexity",)), pgs)


def test_eval_config_validation():
    from prealign_experiments.english_clone.suite import EvalConfig

    with pytest.raises(ValueError, match="--tasks"):
        EvalConfig(tasks=("perplexity", "bleu"))


def test_data_path_without_the_perplexity_task_is_refused(capsys):
    from prealign_experiments.english_clone.evaluate import main

    with pytest.raises(SystemExit) as exc:
        main(["--load", "ckpt", "--setting", "setting", "--tasks", "alignment", "--data-path", "x=prefix"])
    assert exc.value.code == 2
    assert "add perplexity to --tasks" in capsys.readouterr().err
