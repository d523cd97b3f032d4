"""A Chinese-English lexicon on running text: Chinese words matched inside sentences, English words
only whole, in one word-mode lexicon (in-text forms + unspaced-script token classes)."""
from __future__ import annotations

import numpy as np
import pytest

from megatron_prealign.lexicon.dictionary import read_dictionary
from megatron_prealign.lexicon.lexicon import compile_lexicon
from megatron_prealign.lexicon.tokenizer import build_tokenizer

pytestmark = pytest.mark.unit

ZH = ["列出目录内容", "删除文件和目录", "用户的文件", "显示目录中的文件", "复制文件到目录", "目录和文件的内容"]
EN = ["list directory contents", "remove files and directories", "the file of the user", "show the catalog",
      "concatenate files", "a cat and a directory"]


@pytest.fixture(scope="module")
def zh_en(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("zh_en")
    (root / "corpus.txt").write_text("\n".join((ZH + EN) * 20) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "sp"), vocab_size=360, model_type="unigram", hard_vocab_limit=False,
        character_coverage=1.0, byte_fallback=True, num_threads=1, minloglevel=2)
    (root / "dict.tsv").write_text("目录\tdirectory\n文件\tfile\n内容\tcontents\ncat\t猫\n", encoding="utf-8")
    tokenizer = build_tokenizer("SentencePieceTokenizer", root / "sp.model")
    return tokenizer, read_dictionary(root / "dict.tsv")


def _matched_texts(lexicon, tokenizer, text: str) -> list[str]:
    _, _, entries = lexicon.scan(np.asarray(tokenizer.encode(text), dtype=np.int32))
    return [lexicon.entry_text(int(e)) for e in entries]


@pytest.mark.parametrize("mode", ["word", "longest-match"])
def test_chinese_words_match_inside_running_text(zh_en, mode):
    tokenizer, result = zh_en
    lexicon = compile_lexicon(result, tokenizer, mode=mode)
    # Each of these words is somewhere other than at the start of its sentence.
    assert "目录" in _matched_texts(lexicon, tokenizer, "删除文件和目录")
    assert "文件" in _matched_texts(lexicon, tokenizer, "用户的文件")
    assert lexicon.summary()["in_text_forms"] >= 1


def test_in_text_forms_translate_but_are_never_targets(zh_en):
    tokenizer, result = zh_en
    lexicon = compile_lexicon(result, tokenizer)
    texts = [lexicon.entry_text(i) for i in range(lexicon.num_entries)]
    forms = [i for i, t in enumerate(texts) if texts.index(t) != i]  # a second entry with a word's text
    assert forms, "the tokenizer should spell some Chinese word differently inside text"
    targets = set(lexicon.translation_flat.tolist())
    for i in forms:
        first = texts.index(texts[i])
        assert sorted(lexicon.translations(i).tolist()) == sorted(lexicon.translations(first).tolist())
        assert i not in targets
        assert tokenizer.decode(lexicon.entry_tokens(i).tolist()).strip() == texts[i]


def test_english_words_keep_their_boundaries_in_word_mode(zh_en):
    tokenizer, result = zh_en
    word = compile_lexicon(result, tokenizer, mode="word")
    assert _matched_texts(word, tokenizer, "concatenate the catalog") == []
    assert _matched_texts(word, tokenizer, "a cat and a directory") == ["cat", "directory"]


def test_spaced_dictionaries_are_unchanged(data_tokenizer, tmp_path):
    # No word of a script without spaces: no in-text form, the same entries as before.
    (tmp_path / "d.tsv").write_text("house\tHaus\ncat\tKatze\n", encoding="utf-8")
    lexicon = compile_lexicon(read_dictionary(tmp_path / "d.tsv"), data_tokenizer)
    assert lexicon.num_entries == 4 and lexicon.summary()["in_text_forms"] == 0
