"""Tier 2 (files on disk, megatron-core readers, seconds): the English-Clone setting built by
`python -m prealign_experiments.english_clone.setting` (its `main`) from a small synthetic corpus,
through the library's lexicon compilation and preprocessing; its checks (`finalize`) and its
knowledge and transfer sets.

`write_synthetic_corpus` and `build_tiny_setting` are also used by the evaluation tests and the
demo smoke test.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from prealign_experiments.english_clone import setting as setting_cli
from prealign_experiments.english_clone.knowledge import KnowledgeSet
from prealign_experiments.english_clone.setting import (
    CloneSettingConfig,
    chunk_document,
    finalize,
    load_setting,
    word_counts,
)
from prealign_experiments.english_clone.transfer import MONTHS, TransferProbe

# Every word the knowledge relations and the transfer probe need, plus fillers.
_FUNCTION = "the is was a as from in worked came lives first second third last of and to".split()
_VALUES = "farmer officer minister merchant citizen general Mexico France China Japan Russia Spain".split()
_FILLERS = ("house river water money bread night morning summer winter market school church table garden "
            "window letter office paper story music nation power value order field horse mountain forest "
            "island harbor bridge engine wheel train coast valley desert ocean cloud storm light stone metal "
            "glass silver copper cotton wheat sugar coffee paint ink thread rope timber brick clay").split()
_CAPITALS = "Congress President Government Nation Union Senate Treasury Army Navy Court State People Bank".split()
_MONTHS = ("January February March April May June July August September October November December").split()
VOCAB = 200
SMALL_SETTING_ARGS = ["--vocab-size", str(VOCAB), "--chunk-chars", "300", "--eval-every", "8", "--dictionary-size", "200",
                      "--knowledge-entities", "6", "--knowledge-candidates", "3", "--transfer-train-examples", "200",
                      "--clone-share", "0.2"]


def write_synthetic_corpus(path: Path, num_documents: int = 32, seed: int = 0) -> Path:
    """A .jsonl.gz corpus of random sentences over a fixed vocabulary (Zipf-like frequencies)."""
    rng = np.random.default_rng(seed)
    vocabulary = _FUNCTION + _VALUES + _MONTHS + _FILLERS + _CAPITALS
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 0.6
    weights /= weights.sum()
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for _ in range(num_documents):
            sentences = []
            for _ in range(30):
                words = [vocabulary[i] for i in rng.choice(len(vocabulary), size=int(rng.integers(5, 12)), p=weights)]
                words[0] = words[0][:1].upper() + words[0][1:]
                sentences.append(" ".join(words) + rng.choice([".", ".", "!", ","]).replace(",", "."))
            f.write(json.dumps({"text": " ".join(sentences)}) + "\n")
    return path


def build_tiny_setting(root: Path, extra_args=()) -> Path:
    corpus = write_synthetic_corpus(root / "corpus.jsonl.gz")
    out = root / "setting"
    assert setting_cli.main(["--output-dir", str(out), "--corpus", str(corpus), *SMALL_SETTING_ARGS, *extra_args]) == 0
    return out


@pytest.fixture(scope="module")
def setting_dir(tmp_path_factory) -> Path:
    return build_tiny_setting(tmp_path_factory.mktemp("english_clone"))


# -- pure helpers --------------------------------------------------------------------------------

def test_word_counts_follow_word_starts():
    counts = word_counts(["The house's door, (not) it2 the house-boat", "house"])
    # A word starts after whitespace and ends at the first non-letter, as the lexicon scan
    # matches a word-start piece followed by non-continuation pieces ("it2" -> "it" + "2").
    assert counts["house"] == 3 and counts["The"] == 1 and counts["the"] == 1 and counts["it"] == 1
    assert "not" not in counts and "boat" not in counts and "s" not in counts


def test_chunk_document_keeps_every_sentence():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    chunks = chunk_document(text, 100)
    assert " ".join(chunks) == text
    assert all(len(c) < 100 + 40 for c in chunks) and len(chunks) > 5


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="--clone-share"):
        CloneSettingConfig(corpus="c", output_dir=str(tmp_path), clone_share=0.0)
    with pytest.raises(ValueError, match="--knowledge-entities"):
        CloneSettingConfig(corpus="c", output_dir=str(tmp_path), knowledge_entities=2, knowledge_candidates=3)


# -- the built setting -----------------------------------------------------------------------------

def test_setting_manifest_and_counts(setting_dir):
    setting = load_setting(setting_dir)
    stats = setting.stats
    assert setting.vocab_size == VOCAB
    tokens = stats["tokens"]
    assert tokens["en_eval"] == tokens["clone_eval"] > 0
    assert 0.05 < stats["clone_token_share"] < 0.45
    assert stats["eval_dictionary_matches"] > 100
    for name in ("en_train", "clone_train", "knowledge_en", "transfer_en", "en_eval", "clone_eval"):
        for suffix in (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json", ".json"):
            assert Path(setting.prefix(name) + suffix).is_file(), (name, suffix)


def test_dictionary_and_heldout_words(setting_dir):
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    setting = load_setting(setting_dir)
    read = lambda rel: [line.split("\t") for line in Path(setting.path(rel)).read_text(encoding="utf-8").splitlines()]
    dictionary, heldout = read(setting.dictionary_tsv), read(setting.heldout_tsv)
    words = {w for w, _ in dictionary}
    held = {w for w, _ in heldout}
    assert words and held and not words & held
    knowledge = KnowledgeSet.load(setting.path(setting.knowledge))
    probe = TransferProbe.load(setting.path(setting.transfer))
    assert set(knowledge.required_words()) <= words
    assert set(probe.required_words()) <= words
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    lexicon = load_lexicon(setting.path(setting.lexicon), tokenizer)
    assert lexicon.num_entries == 2 * len(dictionary)
    for i in range(lexicon.num_entries):
        tokens = lexicon.entry_tokens(i)
        (translation,) = lexicon.translations(i)
        other = lexicon.entry_tokens(int(translation))
        assert np.array_equal(np.sort(np.abs(tokens.astype(int) - other.astype(int))), np.full(len(tokens), VOCAB))


def test_knowledge_set(setting_dir):
    from prealign_experiments.english_clone.setting import word_counts as counts_of
    from megatron_prealign.lexicon import build_tokenizer

    setting = load_setting(setting_dir)
    kset = KnowledgeSet.load(setting.path(setting.knowledge))
    corpus_words = set(counts_of(json.loads(line)["text"] for line in
                                 gzip.open(setting.config["corpus"], "rt", encoding="utf-8")))
    assert len(kset.entities) == 6 and len(set(kset.entities)) == 6
    assert not set(kset.entities) & corpus_words
    assert kset.chance == pytest.approx(1 / 3)
    # Balanced: every value is true for the same number of entities.
    for rel in kset.relations:
        values = [v for _, r, v in kset.facts if r == rel["name"]]
        assert sorted(np.unique(values, return_counts=True)[1].tolist()) == [2, 2, 2]
    texts = kset.training_texts()
    assert len(texts) == 6 * 2  # one template per relation by default
    assert len(Path(setting.path(setting.texts["knowledge_en"])).read_text().splitlines()) == len(texts)
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    english = kset.queries(tokenizer)
    clone = kset.queries(tokenizer, clone_offset=VOCAB)
    for q_en, q_cl in zip(english, clone):
        assert q_en["prompt"][0] == q_cl["prompt"][0] == tokenizer.eod
        assert q_cl["prompt"][1:] == [t + VOCAB for t in q_en["prompt"][1:]]
        assert max(q_en["prompt"][1:]) < VOCAB and min(q_cl["prompt"][1:]) >= VOCAB
        assert len(q_en["candidates"]) == 3 and q_cl["answer"] == q_en["answer"]
    # The scored continuation is exactly what the training sentence contains.
    e, relation, value = kset.facts[0]
    rel = next(r for r in kset.relations if r["name"] == relation)
    sentence = tokenizer.encode(rel["templates"][0].format(name=kset.entities[e], value=value))
    assert sentence[: len(english[0]["prompt"]) - 1 + len(english[0]["candidates"][english[0]["answer"]])] == \
        english[0]["prompt"][1:] + english[0]["candidates"][english[0]["answer"]]


def test_knowledge_paraphrases(setting_dir):
    from prealign_experiments.english_clone.knowledge import make_knowledge_set
    from megatron_prealign.lexicon import build_tokenizer

    setting = load_setting(setting_dir)
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    words = [line.split("\t")[0] for rel in (setting.dictionary_tsv, setting.heldout_tsv)
             for line in Path(setting.path(rel)).read_text().splitlines()]
    two = make_knowledge_set(tokenizer, words, set(), 6, 3, seed=1, num_templates=2)
    texts = two.training_texts()
    assert len(texts) == 6 * 2 * 2 and sum(" worked as a " in t for t in texts) == 6
    assert "worked" in two.required_words() and "lives" in two.required_words()
    with pytest.raises(ValueError, match="--knowledge-templates"):
        make_knowledge_set(tokenizer, words, set(), 6, 3, seed=1, num_templates=3)


def test_transfer_probe(setting_dir):
    from megatron_prealign.lexicon import build_tokenizer

    setting = load_setting(setting_dir)
    probe = TransferProbe.load(setting.path(setting.transfer))
    assert len(probe.train_examples) == 200 and len(probe.test_examples) == 12 * 3 * 3
    assert probe.chance == pytest.approx(1 / 12)
    texts = probe.training_texts()
    start, step, length = probe.train_examples[0]
    months = texts[0].rstrip(".").split(", ")
    assert len(months) == length and months[0] == MONTHS[start]
    assert all(MONTHS.index(b) == (MONTHS.index(a) + step) % 12 for a, b in zip(months, months[1:]))
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    queries = probe.queries(tokenizer)
    # Every month is the answer equally often (a constant guess scores exactly 1/12).
    assert sorted(np.unique([q["answer"] for q in queries], return_counts=True)[1].tolist()) == [9] * 12
    q = next(q for q in queries if q["step"] == 2)
    clone = probe.queries(tokenizer, clone_offset=VOCAB)[queries.index(q)]
    assert clone["prompt"][1:] == [t + VOCAB for t in q["prompt"][1:]] and clone["answer"] == q["answer"]


def test_rerun_reuses_and_force_rebuilds(setting_dir, caplog):
    manifest = Path(setting_dir) / "manifest.json"
    before = manifest.stat().st_mtime_ns
    corpus = load_setting(setting_dir).config["corpus"]
    assert setting_cli.main(["--output-dir", str(setting_dir), "--corpus", corpus, *SMALL_SETTING_ARGS]) == 0
    assert manifest.stat().st_mtime_ns == before


def test_finalize_catches_a_wrong_clone_set(setting_dir, tmp_path):
    copy = tmp_path / "setting"
    shutil.copytree(setting_dir, copy)
    setting = load_setting(copy)
    for suffix in (".bin", ".idx", "_codeswitch.bin", "_codeswitch.idx", "_codeswitch.json", ".json"):
        shutil.copy(setting.prefix("en_eval") + suffix, setting.prefix("clone_eval") + suffix)
    with pytest.raises(ValueError, match="clone document contains English ids"):
        finalize(setting)


def test_names_in_dictionary_by_default_and_ablated(setting_dir, tmp_path):
    from megatron_prealign.lexicon import build_tokenizer, load_lexicon

    ablated = load_setting(build_tiny_setting(tmp_path, ["--no-knowledge-names-in-dictionary"]))
    ablated_words = {line.split("\t")[0] for line in
                     Path(ablated.path(ablated.dictionary_tsv)).read_text().splitlines()}
    assert not set(KnowledgeSet.load(ablated.path(ablated.knowledge)).entities) & ablated_words

    setting = load_setting(setting_dir)
    kset = KnowledgeSet.load(setting.path(setting.knowledge))
    words = [line.split("\t")[0] for line in Path(setting.path(setting.dictionary_tsv)).read_text().splitlines()]
    assert set(kset.entities) <= set(words)
    tokenizer = build_tokenizer("SentencePieceTokenizer", setting.path(setting.tokenizer_model))
    lexicon = load_lexicon(setting.path(setting.lexicon), tokenizer)
    texts = {lexicon.entry_text(i): i for i in range(lexicon.num_entries)}
    from prealign_experiments.english_clone.clone import to_clone_text

    for name in kset.entities:
        assert texts[to_clone_text(name)] in lexicon.translations(texts[name])
