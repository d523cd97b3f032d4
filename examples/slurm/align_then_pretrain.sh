#!/bin/bash
# PreAlign as two Slurm jobs: the alignment pre-pass alone (--align-only), then pretraining, which
# Slurm starts only if the first job succeeded (--dependency=afterok). Both jobs run the same
# sbatch script with the same SAVE_DIR: the pretraining job loads the aligned checkpoint (--load)
# and goes straight to pretraining. Run from the repository root:
#
#   DATA_PATH=data/corpus_text_document TOKENIZER_MODEL=tok.model LEXICON=en_de.lex \
#     SAVE_DIR=checkpoints/run1 EXTRA_ARGS="--align-steps 5000" \
#     examples/slurm/align_then_pretrain.sh --nodes=4        # sbatch options for both jobs
#
# Settings (environment variables; both jobs also get every setting of the sbatch script):
#   SAVE_DIR              checkpoint root shared by the two jobs (required)
#   SBATCH_SCRIPT         default examples/slurm/pretrain.sbatch (or pretrain_srun.sbatch)
#   ALIGN_SBATCH_ARGS     sbatch options for the alignment job only (e.g. --nodes=1 --time=2:00:00)
#   PRETRAIN_SBATCH_ARGS  sbatch options for the pretraining job only
#   DRY_RUN=1             print the two sbatch commands and exit
# The pre-pass length and the rest of the hyperparameters come from CONFIG / MODEL_ARGS /
# EXTRA_ARGS as for a single job; the alignment job gets EXTRA_ARGS plus --align-only.
set -euo pipefail

: "${SAVE_DIR:?set SAVE_DIR: the pretraining job loads the checkpoint of the alignment job}"
export SAVE_DIR
SBATCH_SCRIPT=${SBATCH_SCRIPT:-$(dirname "$0")/pretrain.sbatch}
ALIGN_EXTRA_ARGS="${EXTRA_ARGS:-} --align-only"
ALIGN=(sbatch --parsable --job-name=prealign-align ${ALIGN_SBATCH_ARGS:-} "$@" "$SBATCH_SCRIPT")
PRETRAIN=(sbatch --parsable --job-name=prealign-pretrain ${PRETRAIN_SBATCH_ARGS:-} "$@")

if [[ ${DRY_RUN:-0} == 1 ]]; then
  echo "EXTRA_ARGS=${ALIGN_EXTRA_ARGS@Q} ${ALIGN[*]@Q}"
  echo "${PRETRAIN[*]@Q} '--dependency=afterok:<ALIGN_JOB_ID>' ${SBATCH_SCRIPT@Q}"
  exit 0
fi
ALIGN_JOB=$(EXTRA_ARGS=$ALIGN_EXTRA_ARGS "${ALIGN[@]}")
ALIGN_JOB=${ALIGN_JOB%%;*}
PRETRAIN_JOB=$("${PRETRAIN[@]}" --dependency=afterok:"$ALIGN_JOB" "$SBATCH_SCRIPT")
echo "align job ${ALIGN_JOB}, pretraining job ${PRETRAIN_JOB%%;*} (starts when job ${ALIGN_JOB} succeeded)"
