"""Tier 1-2: a Megatron-LM user's spellings work unchanged (one test per alias), flags we do not
implement are refused by name with the reason, and `--dry-run` stops where the run would."""
from __future__ import annotations

import pytest

from megatron_prealign.config import UNSUPPORTED, parse_args
from tests.conftest import ASSETS

TOK = str(ASSETS / "tiny_sp.model")


@pytest.mark.parametrize("spelling", ["GPTSentencePieceTokenizer", "Llama2Tokenizer", "SentencePieceTokenizer"])
def test_tokenizer_type_spellings(spelling):
    cfg, _ = parse_args(["--tokenizer-type", spelling])
    assert cfg.data.tokenizer_type == "SentencePieceTokenizer"
    from megatron_prealign.lexicon import build_tokenizer

    assert build_tokenizer(spelling, TOK).vocab_size == 400


def test_unknown_tokenizer_type_is_a_config_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--tokenizer-type", "GPT2BPETokenizer"])
    assert "--tokenizer-type 'GPT2BPETokenizer' is not supported" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--use-mcore-models", "--group-query-attention", "--no-masked-softmax-fusion",
                                  "--no-gradient-accumulation-fusion"])
def test_flags_that_ask_for_what_is_always_so_are_accepted(flag):
    assert parse_args([flag])[0] == parse_args([])[0]


def test_lr_warmup_fraction_sets_the_warmup_from_the_decay_length(capsys):
    from megatron_prealign.optim import lr_schedule_lengths

    cfg, _ = parse_args(["--lr-warmup-fraction", "0.1", "--train-iters", "50"])
    assert lr_schedule_lengths(cfg.optim, train_iters=50, global_batch_size=8) == (40, 400)
    with pytest.raises(SystemExit):
        parse_args(["--lr-warmup-fraction", "0.1", "--lr-warmup-iters", "5"])
    assert "--lr-warmup-fraction and --lr-warmup-iters" in capsys.readouterr().err


def test_per_split_data_paths():
    cfg, _ = parse_args(["--train-data-path", "0.6", "a", "0.4", "b", "--valid-data-path", "v"])
    assert cfg.data.blend_per_split() == [(["a", "b"], [0.6, 0.4]), (["v"], None), None]
    assert cfg.data.prefixes() == ["a", "b", "v"]
    with pytest.raises(SystemExit):
        parse_args(["--data-path", "x", "--train-data-path", "y"])
    with pytest.raises(SystemExit):
        parse_args(["--valid-data-path", "y"])


def test_per_split_data_paths_build_one_dataset_per_split(data_prefixes, data_tokenizer):
    from megatron_prealign.training.data import build_datasets

    a, b = data_prefixes
    cfg, _ = parse_args(["--train-data-path", a, "--valid-data-path", b, "--data-cache-path", "/tmp/habits-cache"])
    train, valid, test = build_datasets(cfg.data, data_tokenizer, seq_length=16, seed=1, num_samples=[8, 4, 0],
                                        is_built_on_rank=lambda: True)
    assert len(train) >= 8 and len(valid) >= 4 and test is None
    assert (train.dataset_path, valid.dataset_path) == (a, b)


@pytest.mark.parametrize("flag", sorted(UNSUPPORTED))
def test_unsupported_megatron_flags_are_refused_by_name(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args([flag, "1"] if flag != "--mock-data" else [flag])
    err = capsys.readouterr().err
    assert f"{flag} is not supported: " in err and "unrecognized" not in err


def test_load_and_pretrained_checkpoint_together_are_megatrons_requeue_rule():
    cfg, _ = parse_args(["--load", "run", "--pretrained-checkpoint", "hf_converted"])
    assert cfg.training.load == "run" and cfg.training.pretrained_checkpoint == "hf_converted"


@pytest.mark.parametrize("extra, message", [
    (["--lr-warmup-iters", "50", "--train-iters", "20"], "--lr-warmup-iters 50 must be smaller"),
    (["--data-path", "/nonexistent/corpus_text_document"], "/nonexistent/corpus_text_document.bin not found"),
    (["--tokenizer-model", "/nonexistent/tok.model"], "not found: /nonexistent/tok.model"),
])
def test_dry_run_fails_where_the_run_would(extra, message, data_prefixes, capsys):
    from megatron_prealign.pretrain import main

    argv = ["--data-path", data_prefixes[0], "--tokenizer-model", TOK, "--train-iters", "20", *extra, "--dry-run"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_dry_run_resolves_the_tokenizer_data_and_schedule(data_prefixes, data_lexicon_path, capsys):
    import yaml

    from megatron_prealign.pretrain import main

    argv = ["--data-path", "0.7", data_prefixes[0], "0.3", data_prefixes[1], "--tokenizer-model", TOK,
            "--lexicon", data_lexicon_path, "--codeswitch-ratio", "0.1", "--train-samples", "64",
            "--global-batch-size", "8", "--lr-warmup-fraction", "0.25", "--align-steps", "5", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out[out.index("resolved:"):])["resolved"]
    assert resolved["tokenizer"] == {"type": "SentencePieceTokenizer", "model": TOK, "vocab_size": 400,
                                     "padded_vocab_size": 512}
    assert resolved["schedule"]["iterations"] == 8 and resolved["schedule"]["lr_warmup_samples"] == 16
    assert [row["weight"] for row in resolved["data"]] == [0.7, 0.3]
    assert all(row["tokens"] > 0 for row in resolved["data"])
    assert resolved["prepass"]["steps"] == 5 and resolved["prepass"]["lexicon_entries"] > 0


def test_evaluate_takes_the_pretraining_data_path_as_is():
    from megatron_prealign.evaluate.perplexity import parse_data_paths

    assert parse_data_paths(["0.7", "/d/en_text_document", "0.3", "/d/de"]) == [
        ("en_text_document", "/d/en_text_document"), ("de", "/d/de")]
    assert parse_data_paths(["clone=/d/c", "/d/e"]) == [("clone", "/d/c"), ("e", "/d/e")]


def test_align_token_budget_sizes_the_pre_pass_in_tokens(data_prefixes, data_lexicon_path, capsys):
    """--align-token-budget: steps = budget / the padded word tokens of a step on the run's own
    sampler; the dry run shows both; it and --align-steps are alternatives."""
    import yaml

    from megatron_prealign.align import AlignConfig, split_entries, steps_for_token_budget, tokens_per_step
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon
    from megatron_prealign.pretrain import main

    lexicon = load_lexicon(data_lexicon_path, build_tokenizer("SentencePieceTokenizer", TOK))
    align = AlignConfig(pairs_per_batch=8, seed=3, heldout_fraction=0.0)
    per_step = tokens_per_step(lexicon, align, split_entries(lexicon, 0.0, 3)[0])
    assert 2 * 8 <= per_step <= 2 * 8 * align.max_word_tokens
    steps, measured = steps_for_token_budget(lexicon, AlignConfig(pairs_per_batch=8, seed=3, heldout_fraction=0.0,
                                                                  token_budget=int(40 * per_step)))
    assert steps == 40 and measured == per_step

    argv = ["--data-path", data_prefixes[0], "--tokenizer-model", TOK, "--lexicon", data_lexicon_path,
            "--train-iters", "10", "--align-pairs-per-batch", "8", "--align-seed", "3",
            "--align-heldout-fraction", "0", "--align-token-budget", str(int(40 * per_step)), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    prepass = yaml.safe_load(out[out.index("resolved:"):])["resolved"]["prepass"]
    assert prepass["steps"] == 40 and prepass["token_budget"] == int(40 * per_step)
    with pytest.raises(SystemExit):
        main(argv + ["--align-steps", "5"])
    assert "--align-token-budget and --align-steps are alternatives" in capsys.readouterr().err
