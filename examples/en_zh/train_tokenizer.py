"""Train a SentencePiece model on JSONL corpora (one `{"text": ...}` per line), for the example runs.

    python examples/en_zh/train_tokenizer.py --input data/zh.jsonl data/en.jsonl --model-prefix data/sp \
        [--vocab-size 8000]

Unigram with byte fallback (no unknown-token ids, so every dictionary word can be spelled), the
vocabulary size an upper bound (a small corpus may give fewer pieces), and
character coverage 0.9995, the usual setting for Chinese. Writes `<prefix>.model` and `<prefix>.vocab`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Optional, Sequence


def train(inputs: Sequence[str], model_prefix: str, vocab_size: int, *, seed_sentences: int = 300_000) -> str:
    import sentencepiece as spm

    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as lines:
        for path in inputs:
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    try:
                        text = json.loads(line)["text"]
                    except (ValueError, KeyError, TypeError):
                        raise ValueError(f"{path}:{number}: not a JSON object with a \"text\" string") from None
                    lines.write(text.replace("\r", " ") + "\n")
    try:
        spm.SentencePieceTrainer.train(
            input=lines.name, model_prefix=model_prefix, vocab_size=vocab_size, model_type="unigram",
            character_coverage=0.9995, byte_fallback=True, input_sentence_size=seed_sentences,
            shuffle_input_sentence=True, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    finally:
        os.unlink(lines.name)
    return model_prefix + ".model"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", nargs="+", required=True, help="JSONL files with a \"text\" field")
    parser.add_argument("--model-prefix", required=True, help="writes <prefix>.model and <prefix>.vocab")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        print(train(args.input, args.model_prefix, args.vocab_size))
    except (OSError, ValueError, RuntimeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
