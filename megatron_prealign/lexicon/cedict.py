"""CC-CEDICT lines: ``Traditional Simplified [pin1 yin1] /gloss/gloss/.../``.

Each line pairs the Chinese word (simplified, and traditional as its own pair when it differs) with
each of its English glosses, cleaned:

- notes in ``(...)`` are dropped (``filament (in a lightbulb)`` -> ``filament``), and a gloss is
  split on ``;`` (``trisomy; Down's syndrome`` holds two);
- a leading infinitive ``to`` goes (``to eat`` -> ``eat``): CEDICT writes every verb that way, and
  running English text has ``eat``, not ``to eat``;
- cross-references and classifier lists are dropped as ``reference``: ``CL:個|个[ge4]``,
  ``variant of 原原本本[...]``, ``see ...``, ``abbr. for ...``, and any gloss that still holds
  Chinese characters or a ``[pin1 yin1]`` reference after its notes are gone;
- glosses that are pinyin only (``pr. [wan4]``, ``Gun3 shi2``) are dropped as ``pinyin``;
- a gloss of several words stays one phrase and is dropped as ``phrase``, as in the other readers;
- a headword without a Chinese character (``3C``, ``88``) is no Chinese word: ``not_chinese``.

`parse_cedict_line` raises ValueError for a malformed line; the reader reports it with its place.
"""
from __future__ import annotations

import re

__all__ = ["CEDICT_DROPS", "looks_like_cedict", "parse_cedict_line"]

CEDICT_DROPS = ("reference", "pinyin", "not_chinese")
"""Drop reasons of this reader besides ``phrase``."""

_LINE = re.compile(r"(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*")
_NOTE = re.compile(r"\([^()]*\)")
_CJK = re.compile(r"[\u2e80-\u2fff\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_REFERENCE_START = re.compile(
    r"(CL:|(\w+ )*variant of |see |see also |abbr\. (for|to) |also written |used in |(\w+ )?pr\. |classifier for )", re.IGNORECASE
)
_PINYIN_SYLLABLE = re.compile(r"[A-Za-zü:]+[1-5]")


def looks_like_cedict(line: str) -> bool:
    """True when `line` has the CC-CEDICT layout."""
    return _LINE.fullmatch(line) is not None


def parse_cedict_line(text: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(``(chinese, english)`` pairs, drop counts by reason) of one CC-CEDICT line.

    Raises:
        ValueError: the line does not have the CC-CEDICT layout.
    """
    m = _LINE.fullmatch(text.strip())
    if m is None:
        raise ValueError("expected 'Traditional Simplified [pin1 yin1] /gloss/gloss/' (CC-CEDICT line)")
    traditional, simplified, _, glosses = m.groups()
    drops = {"phrase": 0, "reference": 0, "pinyin": 0, "not_chinese": 0}
    heads = [simplified] if traditional == simplified else [simplified, traditional]
    if not _CJK.search(simplified):
        drops["not_chinese"] += 1
        return [], drops
    english: list[str] = []
    for gloss in glosses.split("/"):
        if _REFERENCE_START.match(gloss.strip()):
            drops["reference"] += 1
            continue
        for part in _strip_notes(gloss).split(";"):
            word = " ".join(part.split())
            if not word:
                continue
            if _CJK.search(word) or "[" in word or "|" in word:
                drops["reference"] += 1
            elif all(_PINYIN_SYLLABLE.fullmatch(s) for s in word.split()):
                drops["pinyin"] += 1
            else:
                if word.startswith("to ") and " " not in word[3:]:
                    word = word[3:]
                if " " in word:
                    drops["phrase"] += 1
                elif word not in english:
                    english.append(word)
    return [(h, e) for h in heads for e in english], drops


def _strip_notes(gloss: str) -> str:
    # Notes nest ("(of a person (formal)) kind"): peel the innermost until none is left.
    while True:
        stripped = _NOTE.sub(" ", gloss)
        if stripped == gloss:
            return stripped
        gloss = stripped
