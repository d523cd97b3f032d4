"""Cross-lingual knowledge application: facts learned in English, queried in the clone.

The set (`make_knowledge_set`): invented entities (names that occur nowhere in the corpus, so
nothing leaks from real text), each with one value per relation, e.g.

    role:  "{name} was a {value}."   ("{name} worked as a {value}.")     values: farmer, officer, ...
    home:  "{name} came from {value}."   ("{name} lives in {value}.")    values: Mexico, France, ...

Every fact appears in English training text only, one document per fact and template (by default
only the first template: a 4-layer model did not learn 60 facts from ~75 exposures of each of two
paraphrases, see bench/RESULTS.md); how often the trainer sees it is set by the blend weight of
``knowledge_en`` (the demo aims at a number of exposures). Names are built from pieces of dictionary words (a capitalized word-start
piece + a word-internal piece), so their clone twins are made of pieces whose English versions the
alignment touches; every word of the templates and every value is a dictionary word.

The query (`evaluate_knowledge`): after an end-of-document token, the first template's prompt
(``"{name} was a"``) in the clone; the true value is ranked against the relation's other values
by the summed log-probability of the value's tokens. Values are assigned so each is true for the
same number of entities: a model that ignores the name scores exactly chance, 1 / number of
values. The same query in English measures whether the facts were learned at all.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from megatron_prealign.fileio import atomic_path

__all__ = ["RELATIONS", "KnowledgeSet", "Relation", "evaluate_knowledge", "make_knowledge_set", "name_lexicon"]


@dataclass(frozen=True)
class Relation:
    name: str
    templates: tuple[str, ...]
    """Training sentences; ``{name}`` and ``{value}`` are filled in. The first one is queried."""
    values: tuple[str, ...]
    """Candidate values in order of preference; the first K that are dictionary words are used."""

    @property
    def query(self) -> str:
        """The first template up to (not including) the value."""
        return self.templates[0].split(" {value}")[0]


RELATIONS = (
    Relation("role", ("{name} was a {value}.", "{name} worked as a {value}."),
             ("farmer", "officer", "minister", "merchant", "citizen", "general", "judge", "soldier", "teacher")),
    Relation("home", ("{name} came from {value}.", "{name} lives in {value}."),
             ("Mexico", "France", "China", "Japan", "Russia", "Spain", "Germany", "Canada", "Cuba", "Korea")),
)


@dataclass
class KnowledgeSet:
    relations: list[dict[str, Any]]
    """Per relation: name, templates, query, values (the K used)."""
    entities: list[str]
    """Invented names."""
    facts: list[list[Any]]
    """``[entity index, relation name, value]`` rows."""
    name_pieces: dict[str, list[int]] = field(default_factory=dict)
    """Token ids of each name (as after a space), for the record."""

    @property
    def chance(self) -> float:
        return 1.0 / len(self.relations[0]["values"])

    def required_words(self) -> list[str]:
        """Words that must be dictionary words: template words and values."""
        words = []
        for rel in self.relations:
            for template in rel["templates"]:
                words += [w.strip(".") for w in template.split() if "{" not in w]
            words += rel["values"]
        return sorted(set(words))

    def training_texts(self) -> list[str]:
        """Every fact in every template (one document each), in a fixed order."""
        by_name = {rel["name"]: rel for rel in self.relations}
        return [template.format(name=self.entities[e], value=value)
                for e, relation, value in self.facts for template in by_name[relation]["templates"]]

    def summary(self) -> dict[str, Any]:
        return {"entities": len(self.entities), "facts": len(self.facts), "relations": [r["name"] for r in self.relations],
                "values_per_relation": len(self.relations[0]["values"]), "chance": self.chance,
                "training_documents": len(self.training_texts()), "example_names": self.entities[:5]}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KnowledgeSet":
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def queries(self, tokenizer, *, clone_offset: int = 0, answer_offset: int | None = None) -> list[dict[str, Any]]:
        """One query per fact: ``prompt`` ids (EOD first), ``candidates`` (ids per value),
        ``answer`` index, ``relation``. With `clone_offset` = V every id but EOD is shifted into
        the clone; `answer_offset` (default: `clone_offset`) shifts the candidates separately."""
        eod = tokenizer.eod
        answer_offset = clone_offset if answer_offset is None else answer_offset
        shift = (lambda ids: [i + clone_offset for i in ids])
        shift_answer = (lambda ids: [i + answer_offset for i in ids])
        out = []
        by_name = {rel["name"]: rel for rel in self.relations}
        for e, relation, value in self.facts:
            rel = by_name[relation]
            prompt = [eod] + shift(tokenizer.encode(rel["query"].format(name=self.entities[e])))
            candidates = [shift_answer(tokenizer.encode_word(v)) for v in rel["values"]]
            out.append({"prompt": prompt, "candidates": candidates, "answer": rel["values"].index(value),
                        "relation": relation})
        return out


def name_lexicon(tokenizer, kset: KnowledgeSet, clone_offset: int):
    """A lexicon of the entity names and their clone twins (translations of each other), for the
    alignment gap on the very words the knowledge queries depend on."""
    from megatron_prealign.lexicon import Lexicon

    english = [tokenizer.encode_word(name) for name in kset.entities]
    clone = [[t + clone_offset for t in ids] for ids in english]
    n = len(english)
    return Lexicon.from_entries(english + clone, [[n + i] for i in range(n)] + [[i] for i in range(n)],
                                tokenizer.token_classes(), entry_texts=list(kset.entities) * 2,
                                tokenizer_fingerprint=tokenizer.fingerprint, tokenizer_type=tokenizer.tokenizer_type)


def tokenizes_as_parts(tokenizer, prompt: str, word: str) -> bool:
    """True if ``"{prompt} {word}."`` encodes as prompt + word (as after a space) + the rest:
    the scored continuation is then exactly what the training text contains."""
    head = tokenizer.encode(prompt) + tokenizer.encode_word(word)
    full = tokenizer.encode(f"{prompt} {word}.")
    return len(full) > len(head) and full[: len(head)] == head


def invent_names(tokenizer, dictionary: Sequence[str], known_words: set[str], count: int,
                 rng: np.random.Generator) -> list[str]:
    """`count` capitalized names absent from `known_words`, each two pieces of dictionary words.

    Raises:
        ValueError: not enough names can be formed (dictionary too small).
    """
    allowed_tokens: set[int] = set()
    heads, tails = set(), set()
    pieces = tokenizer.pieces()
    for word in dictionary:
        ids = tokenizer.encode_word(word)
        allowed_tokens.update(ids)
        first = pieces[ids[0]].lstrip("\u2581")
        if word[:1].isupper() and first[:1].isupper() and first.isalpha() and len(first) >= 2:
            heads.add(first)
        for t in ids[1:]:
            text = pieces[t]
            if text.isalpha() and text.islower() and len(text) >= 2:
                tails.add(text)
    heads_list, tails_list = sorted(heads), sorted(tails)
    if not heads_list or not tails_list:
        raise ValueError("the dictionary has no capitalized word-start pieces or no word-internal pieces")
    names: list[str] = []
    seen: set[str] = set()
    for _ in range(200 * count):
        name = heads_list[rng.integers(len(heads_list))] + tails_list[rng.integers(len(tails_list))]
        if name in seen or name in known_words or not 4 <= len(name) <= 12:
            continue
        seen.add(name)
        ids = tokenizer.encode_word(name)
        if len(ids) < 2 or not set(ids) <= allowed_tokens:
            continue
        names.append(name)
        if len(names) == count:
            return names
    raise ValueError(f"could form only {len(names)} of {count} invented names from the dictionary")


def make_knowledge_set(tokenizer, frequent_words: Sequence[str], known_words: set[str], num_entities: int,
                       num_values: int, *, seed: int, num_templates: int = 1,
                       relations: Sequence[Relation] = RELATIONS) -> KnowledgeSet:
    """Build the knowledge set (see module docstring).

    Args:
        tokenizer: the English-Clone tokenizer (English ids are the English model's).
        frequent_words: dictionary candidates, most frequent first.
        known_words: every word of the corpus (names must not be among them).
        num_entities: invented entities; each gets one fact per relation.
        num_values: values per relation (chance = 1 / num_values).
        seed: seed of names and assignments.
        num_templates: training sentences per fact, from each relation's templates (the first,
            the queried one, always); one concentrates the exposures a tiny model needs.

    Raises:
        ValueError: a relation has fewer than `num_values` usable values, or a template word is
            not among `frequent_words`.
    """
    rng = np.random.default_rng([seed, 0x4B4E])
    frequent = set(frequent_words)
    if not 1 <= num_templates <= min(len(r.templates) for r in relations):
        raise ValueError(f"--knowledge-templates must be between 1 and {min(len(r.templates) for r in relations)}")
    chosen = []
    for rel in relations:
        rel = Relation(rel.name, rel.templates[:num_templates], rel.values)
        words = {w.strip(".") for t in rel.templates for w in t.split() if "{" not in w}
        missing = sorted(words - frequent)
        if missing:
            raise ValueError(f"knowledge relation {rel.name!r}: template words {missing} are not frequent "
                             f"enough to be dictionary words; raise --dictionary-size")
        values = [v for v in rel.values if v in frequent
                  and all(tokenizes_as_parts(tokenizer, t.split(" {value}")[0].format(name="Someone"), v)
                          for t in rel.templates)][:num_values]
        if len(values) < num_values:
            raise ValueError(f"knowledge relation {rel.name!r}: only {len(values)} of its values are dictionary "
                             f"words that tokenize cleanly, {num_values} needed; raise --dictionary-size or "
                             f"lower --knowledge-candidates")
        chosen.append({"name": rel.name, "templates": list(rel.templates), "query": rel.query, "values": values})
    names = invent_names(tokenizer, frequent_words, known_words, num_entities, rng)
    facts = []
    for rel in chosen:
        # Balanced: each value is true for the same number of entities (up to one).
        values = [rel["values"][i % num_values] for i in range(num_entities)]
        order = rng.permutation(num_entities)
        facts += [[int(e), rel["name"], values[k]] for k, e in enumerate(order)]
    facts.sort(key=lambda f: (f[0], f[1]))
    return KnowledgeSet(relations=chosen, entities=names, facts=facts,
                        name_pieces={n: tokenizer.encode_word(n) for n in names})


def evaluate_knowledge(model, tokenizer, kset: KnowledgeSet, *, clone_offset: int = 0,
                       answer_offset: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of ranking each fact's true value first among its relation's values.

    Args:
        model: bare GPTModel.
        tokenizer: the setting's tokenizer.
        kset: the knowledge set.
        clone_offset: 0 to ask in English, V to ask in the clone.
        answer_offset: language of the candidate values (default: the question's); a clone
            question with English candidates shows facts recalled but answered in English.

    Returns:
        ``accuracy``, ``chance``, ``n``, ``per_relation`` accuracies, ``mean_rank`` (1 = best),
        and ``margin``: mean log-prob of the true value minus the mean of the others.
    """
    from megatron_prealign.evaluate.scoring import continuation_logprobs

    queries = kset.queries(tokenizer, clone_offset=clone_offset, answer_offset=answer_offset)
    items = [(q["prompt"], c) for q in queries for c in q["candidates"]]
    scores = continuation_logprobs(model, items, batch_size=batch_size)
    correct, ranks, margins, per_relation = [], [], [], {}
    pos = 0
    for q in queries:
        k = len(q["candidates"])
        s = scores[pos : pos + k]
        pos += k
        true = s[q["answer"]]
        others = np.delete(s, q["answer"])
        hit = bool(true > others.max())
        correct.append(hit)
        ranks.append(1 + int((others >= true).sum()))
        margins.append(float(true - others.mean()))
        per_relation.setdefault(q["relation"], []).append(hit)
    return {
        "accuracy": float(np.mean(correct)),
        "chance": kset.chance,
        "n": len(queries),
        "per_relation": {name: float(np.mean(hits)) for name, hits in per_relation.items()},
        "mean_rank": float(np.mean(ranks)),
        "margin": float(np.mean(margins)),
    }
