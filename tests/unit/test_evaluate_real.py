"""Tier 2 (single-process megatron-core on CPU, seconds): evaluating a checkpoint on a real
language pair: cross-lingual retrieval per layer, the alignment gap on a lexicon's dictionary and
held-out words, perplexity on the documents pretraining held out, and the command line's
one-line refusals.

Retrieval is checked where the answer is known (identical src and tgt: every layer finds every
translation; unrelated pairs: about chance), the embeddings against the model's own embedding
output and against batching, the document split against megatron-core's dataset builder.
"""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

VOCAB_SIZE = 400  # the tiny SentencePiece tokenizer of tests/assets


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run much faster with one thread on a loaded 2-core machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pgs():
    from megatron_prealign.evaluate.loading import single_process_group

    with single_process_group(seed=7) as groups:
        yield groups


def _model(pgs, seed=0, seq_length=64):
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.parallel import ParallelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=seq_length,
                      vocab_size=VOCAB_SIZE)
    return build_model(cfg, ParallelConfig(), pgs), cfg


@pytest.fixture(scope="module")
def sentences(data_corpus_lines):
    """500 distinct made-up sentences from the corpus's words (4-12 words each)."""
    rng = random.Random(0)
    words = " ".join(data_corpus_lines).split()
    out: dict[str, None] = {}
    while len(out) < 500:
        out[" ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))] = None
    return list(out)


def test_retrieval_of_identical_sentences_is_perfect_and_of_unrelated_ones_near_chance(pgs, data_tokenizer,
                                                                                      sentences):
    from megatron_prealign.evaluate import retrieval_accuracy

    model, _ = _model(pgs)
    same = retrieval_accuracy(model, data_tokenizer, [(s, s) for s in sentences], candidates=100, seed=3)
    assert same["n"] == 500 and same["chance"] == pytest.approx(0.01)
    assert list(same["src->tgt"]) == ["embedding", "layer_1", "layer_2", "final_norm"]
    for direction in ("src->tgt", "tgt->src"):
        assert all(acc == 1.0 for acc in same[direction].values()), same[direction]
    # Each src paired with another sentence's text, drawn so that no tgt repeats a src of the
    # same candidate set's meaning: with nothing to find, top-1 is a lottery of 1 in 100.
    order = np.random.default_rng(0).permutation(len(sentences))
    unrelated = [(sentences[i], sentences[j] + " and the sea") for i, j in zip(range(500), order)]
    result = retrieval_accuracy(model, data_tokenizer, unrelated, candidates=100, seed=3)
    for direction in ("src->tgt", "tgt->src"):
        assert all(acc <= 0.05 for acc in result[direction].values()), result[direction]


def test_retrieval_is_seeded_and_drops_repeated_texts(pgs, data_tokenizer, sentences):
    from megatron_prealign.evaluate.retrieval import candidate_indices, retrieval_accuracy

    cand = candidate_indices(50, 10, seed=1)
    assert (cand[:, 0] == np.arange(50)).all()
    assert all(len(set(row)) == 10 for row in cand.tolist())
    assert (cand == candidate_indices(50, 10, seed=1)).all() and not (cand == candidate_indices(50, 10, seed=2)).all()

    model, _ = _model(pgs, seed=1)
    pairs = [(s, s.upper()) for s in sentences[:40]]
    pairs += [(sentences[0], "something else"), ("another", sentences[1].upper())]  # a repeated src, a repeated tgt
    result = retrieval_accuracy(model, data_tokenizer, pairs, candidates=10, seed=0)
    assert result["n"] == 40 and result["dropped_duplicates"] == 2
    with pytest.raises(ValueError, match="--retrieval-candidates 41 needs at least 41 distinct pairs, there are 40"):
        retrieval_accuracy(model, data_tokenizer, pairs, candidates=41)


def test_sentence_embeddings_are_mean_pooled_and_independent_of_batching(pgs):
    from megatron_prealign.evaluate.retrieval import sentence_embeddings

    model, _ = _model(pgs, seed=2)
    model.eval()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(4, VOCAB_SIZE, size=int(rng.integers(1, 20))).tolist() for _ in range(9)]
    batched = sentence_embeddings(model, seqs, batch_size=4)
    alone = torch.cat([sentence_embeddings(model, [s], batch_size=1) for s in seqs], dim=1)
    assert batched.shape == (4, 9, 64)
    torch.testing.assert_close(batched, alone, atol=2e-5, rtol=1e-4)
    with torch.no_grad():
        for i, s in enumerate(seqs):
            ids = torch.tensor([s])
            emb = model.embedding(input_ids=ids, position_ids=torch.arange(len(s)).unsqueeze(0))  # [s, 1, h]
            torch.testing.assert_close(batched[0, i], emb[:, 0].float().mean(dim=0), atol=1e-5, rtol=1e-4)


def test_read_parallel_one_line_errors(tmp_path):
    from megatron_prealign.evaluate.retrieval import read_parallel

    good = tmp_path / "p.jsonl"
    good.write_text('{"src": "the house", "tgt": "la casa", "id": 1}\n\n{"src": "water", "tgt": "agua"}\n')
    assert read_parallel(good) == [("the house", "la casa"), ("water", "agua")]
    for text, message in (('{"src": "a"}\n', ':1: expected an object with string fields "src" and "tgt"'),
                          ('{"src": "a", "tgt": "b"}\nnot json\n', ":2: not a JSON object"),
                          ('{"src": " ", "tgt": "b"}\n', ':1: empty "src" or "tgt" text')):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(ValueError, match="--parallel-data .*bad.jsonl" + message.replace('"', '.')):
            read_parallel(bad)
    with pytest.raises(ValueError, match="no such file"):
        read_parallel(tmp_path / "missing.jsonl")


def test_split_documents_cut_as_megatron_core_builds_the_splits(data_prefixes, data_tokenizer, tmp_path):
    """The oracle: the document indices megatron-core's builder gives each split of a prefix
    (pretraining's own `build_datasets`)."""
    from megatron_prealign.data.integrity import open_token_dataset
    from megatron_prealign.evaluate.heldout import split_documents
    from megatron_prealign.training.config import DataConfig
    from megatron_prealign.training.data import build_datasets

    prefix = data_prefixes[0]
    count = len(open_token_dataset(prefix, tokenizer=data_tokenizer))
    # Splits whose every part has documents (megatron-core's builder never finishes sampling an
    # empty part: its epoch holds no tokens).
    for split in ("60,30,10", "1,1,1", "90,7,3"):
        cfg = DataConfig(data_path=(prefix,), split=split, tokenizer_model=data_tokenizer.model_path,
                         data_cache_path=str(tmp_path / split.replace(",", "_")))
        built = build_datasets(cfg, data_tokenizer, seq_length=16, seed=1, num_samples=[4, 4, 4],
                               is_built_on_rank=lambda: True)
        for part, dataset in zip(("train", "valid", "test"), built):
            ours = split_documents(count, split, part)
            got = [] if dataset is None else dataset.indices.tolist()
            assert list(ours) == got, (split, part)
    assert split_documents(100, "100,0,0", "valid") == range(0)
    with pytest.raises(ValueError, match="--split '1,2': expected three"):
        split_documents(100, "1,2", "valid")


def test_heldout_status(data_prefixes):
    from megatron_prealign.evaluate.heldout import heldout_status, split_documents

    a, b = data_prefixes
    run = {"data_path": ["0.7", a, "0.3", "/elsewhere/c"], "split": "60,30,10"}
    valid = split_documents(100, "60,30,10", "valid")
    assert heldout_status(a, valid, 100, run)[0] == "yes"
    verdict, why = heldout_status(a, range(100), 100, run)
    assert verdict == "no" and "60 of the 100 documents measured" in why
    assert heldout_status(b, range(10), 10, run)[0] == "unknown"
    assert heldout_status(a, valid, 100, None) == ("unknown", "the checkpoint records no run config")
    per_split = {"train_data_path": [a], "valid_data_path": [b]}
    assert heldout_status(b, range(10), 10, per_split)[0] == "yes"
    assert heldout_status(a, range(5, 6), 10, per_split)[0] == "no"


def test_gap_split_follows_the_run_config_and_its_overrides():
    from megatron_prealign.config import RunConfig
    from megatron_prealign.evaluate.alignment import gap_split_from_checkpoint

    meta = {"config": RunConfig.from_flat({"seed": 5, "align_heldout_fraction": 0.3}).to_dict()}
    split = gap_split_from_checkpoint(meta)
    assert (split.heldout_fraction, split.seed, split.source) == (0.3, 5, "the checkpoint's run config")
    assert gap_split_from_checkpoint(meta, seed=9).seed == 9
    assert gap_split_from_checkpoint(meta, seed=9, align_seed=11).seed == 11
    explicit = {"config": RunConfig.from_flat({"seed": 5, "align_seed": 8}).to_dict()}
    assert gap_split_from_checkpoint(explicit).seed == 8
    bare = gap_split_from_checkpoint({})
    assert (bare.heldout_fraction, bare.seed) == (0.05, 1234) and "records no run config" in bare.source


def test_lexicon_gaps_label_dictionary_and_heldout_words(pgs, data_lexicon_path):
    from megatron_prealign.align import split_entries
    from megatron_prealign.evaluate.alignment import GapSplit, format_gaps, lexicon_alignment_gaps
    from megatron_prealign.lexicon import load_lexicon

    lexicon = load_lexicon(data_lexicon_path)
    model, _ = _model(pgs, seed=4)
    result = lexicon_alignment_gaps(model, lexicon, pgs, GapSplit(heldout_fraction=0.3, seed=5))
    train, heldout = split_entries(lexicon, 0.3, 5)
    assert result["dictionary"]["entries"] == len(train) and result["heldout"]["entries"] == len(heldout)
    for part in ("dictionary", "heldout"):
        assert result[part]["words"] > 0 and result[part]["translation_pairs"] > 0
        assert list(result[part]["gap"]) == ["embedding", "layer_1", "layer_2", "output_embedding"]
    text = "\n".join(format_gaps(result))
    assert "dictionary words (pre-pass training split)" in text and "held-out words" in text
    none_held = lexicon_alignment_gaps(model, lexicon, pgs, GapSplit(heldout_fraction=0.0, seed=5))
    assert none_held["heldout"]["gap"] is None and "--align-heldout-fraction is 0" in none_held["heldout"]["note"]


@pytest.fixture(scope="module")
def checkpoint(pgs, tmp_path_factory, data_prefixes, data_tokenizer, data_lexicon_path):
    """A checkpoint whose run config trained on prefix a with --split 60,30,10 and the lexicon."""
    from megatron_prealign.checkpointing import save_checkpoint
    from megatron_prealign.config import RunConfig
    from megatron_prealign.lexicon import load_lexicon

    model, cfg = _model(pgs, seed=6)
    run = RunConfig.from_flat({"data_path": [data_prefixes[0]], "split": "60,30,10", "seed": 5,
                               "align_heldout_fraction": 0.3, "tokenizer_model": data_tokenizer.model_path})
    root = tmp_path_factory.mktemp("eval_real") / "ckpt"
    state = {"iteration": 3, "model": dataclasses.asdict(cfg), "config": run.to_dict(),
             "tokenizer_fingerprint": data_tokenizer.fingerprint,
             "lexicon_sha256": load_lexicon(data_lexicon_path).sha256}
    save_checkpoint(root, model=model, state=state, iteration=3, with_rng=False)
    return root, model, cfg


def test_cli_measures_all_three_and_says_what_was_held_out(checkpoint, data_prefixes, data_lexicon_path, sentences,
                                                           tmp_path, capsys):
    from megatron_prealign.data.integrity import open_token_dataset
    from megatron_prealign.evaluate.__main__ import main
    from megatron_prealign.evaluate.heldout import split_documents
    from megatron_prealign.evaluate.perplexity import heldout_perplexity

    root, model, cfg = checkpoint
    a, b = data_prefixes
    parallel = tmp_path / "pairs.jsonl"
    parallel.write_text("".join(json.dumps({"src": s, "tgt": s}) + "\n" for s in sentences[:120]))
    out = tmp_path / "results.json"
    assert main(["--load", str(root), "--data-path", f"a={a}", f"b={b}", "--heldout-split", "valid",
                 "--lexicon", data_lexicon_path, "--parallel-data", str(parallel), "--retrieval-candidates", "20",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    count = len(open_token_dataset(a))
    valid = split_documents(count, "60,30,10", "valid")
    ppl = results["perplexity"]
    assert ppl["a"]["heldout"] == "yes" and ppl["a"]["documents"] == f"{valid.start}:{valid.stop}"
    assert ppl["b"]["heldout"] == "unknown"  # not a dataset of the run
    direct = heldout_perplexity(model, a, seq_length=cfg.seq_length, documents=valid)
    assert ppl["a"]["tokens"] == direct["tokens"] and ppl["a"]["ppl"] == pytest.approx(direct["ppl"], rel=1e-6)
    assert "held-out: yes" in printed and "held-out: unknown" in printed
    gaps = results["alignment_gap"]
    assert gaps["split"]["heldout_fraction"] == 0.3 and gaps["split"]["seed"] == 5
    assert gaps["lexicon_is_the_runs"] is True and gaps["heldout"]["gap"] is not None
    assert "held-out words" in printed and "dictionary words" in printed
    retrieval = results["retrieval"]
    assert retrieval["n"] == 120 and retrieval["candidates"] == 20
    assert all(v == 1.0 for v in retrieval["src->tgt"].values())

    assert main(["--load", str(root), "--data-path", a]) == 0
    assert "held-out: no" in capsys.readouterr().out  # the whole prefix includes its training part


@pytest.mark.parametrize("argv, message", [
    (["--max-tokens", "5", "--lexicon", "x.lex"], "--max-tokens has no effect without --data-path"),
    (["--align-seed", "3", "--data-path", "PREFIX_A"], "--align-seed has no effect without --lexicon"),
    (["--retrieval-candidates", "5", "--lexicon", "x.lex"], "--retrieval-candidates has no effect without "
                                                             "--parallel-data"),
    (["--tokenizer-model", "m", "--lexicon", "x.lex"], "--tokenizer-model has no effect without --parallel-data"),
    (["--split", "1,1,1", "--data-path", "PREFIX_A"], "--split has no effect without --heldout-split"),
    (["--lexicon", "x.lex", "--seed", "1", "--align-seed", "2"], "--seed has no effect with --align-seed"),
    ([], "nothing to measure"),
    (["--data-path", "PREFIX_A", "--heldout-split", "valid", "--documents", "0:3"], "not allowed with argument"),
])
def test_cli_refuses_options_that_would_be_ignored(checkpoint, data_prefixes, capsys, argv, message):
    from megatron_prealign.evaluate.__main__ import main

    root = checkpoint[0]
    argv = [data_prefixes[0] if item == "PREFIX_A" else item for item in argv]
    with pytest.raises(SystemExit) as exc:
        main(["--load", str(root), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and message in err[-1], err


def test_cli_one_line_errors_on_mismatched_inputs(checkpoint, data_prefixes, data_other_tokenizer_model, sentences,
                                                  tmp_path, capsys):
    from megatron_prealign.evaluate.__main__ import main
    from megatron_prealign.lexicon.dictionary import read_dictionary
    from megatron_prealign.lexicon.lexicon import compile_lexicon
    from megatron_prealign.lexicon.tokenizer import build_tokenizer

    root = checkpoint[0]
    dictionary = tmp_path / "d.muse"
    dictionary.write_text("house Haus\nwater Wasser\n", encoding="utf-8")
    foreign = tmp_path / "foreign.lex"
    compile_lexicon(read_dictionary(dictionary),
                    build_tokenizer("SentencePieceTokenizer", data_other_tokenizer_model)).save(foreign)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"src": s, "tgt": s}) + "\n" for s in sentences[:10]))
    cases = (
        (["--lexicon", str(foreign)], f"--lexicon {foreign} was built for another tokenizer than the checkpoint's"),
        (["--parallel-data", str(pairs), "--tokenizer-model", data_other_tokenizer_model],
         "is not the checkpoint's tokenizer"),
        (["--parallel-data", str(pairs)], "--retrieval-candidates 100 needs at least 100 distinct pairs, there are 10"),
        (["--data-path", data_prefixes[0], "--documents", "0:100000"], "--documents 0:100000:"),
        (["--data-path", data_prefixes[0], "--documents", "5"], "--documents '5': expected FIRST:END"),
    )
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(["--load", str(root), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and message in err[0], (argv, err)
