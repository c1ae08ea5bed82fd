#!/usr/bin/env bash
# A real pre-trained BERT on Debtags, end to end from the raw files: all-MiniLM-L6-v2 imported
# (`import-hf`), then
#   (a) fine-tuned directly;
#   (b) pre-trained further on the Debtags corpus with the masked LM for a wall-clock budget
#       (domain-adaptive pre-training, `pretrain --init --time-budget`), then fine-tuned the same way;
#   (c) the same architecture from random weights, fine-tuned (RANDOM_INIT=1; its own learning rate);
# each with a shared threshold tuned on validation, each alone and in an ensemble with
# `bertlu linear` (its share chosen on validation); test scored once at the end.
# Fine-tuning: mean pooling, 128 pieces, head at lr 3e-3 and the backbone at a tenth of it
# (3e-4), BCE, batch 32, EPOCHS epochs (default 2), the best epoch by validation micro-F1 kept.
# Measured in docs/results.md ("A real pre-trained BERT: all-MiniLM-L6-v2 on Debtags").
#
#   bash bench/debtags_minilm.sh [DATA_DIR] [WORK_DIR]
#
# MINILM: where the checkpoint is or goes (default ~/.cache/bertlu/all-MiniLM-L6-v2, fetched with
# ../shared/models/fetch-minilm.sh when absent); BUDGET: the continued pre-training's wall time
# (default 20m); DAPT_EPOCHS: instead of a budget, that many whole passes over the corpus (the
# one-epoch (b): DAPT_EPOCHS=1 EPOCHS=8 EMA=0.999 AVERAGE=3,4,5 MAX_LEN=384, its best epochs
# being 3-5 where (a)'s were 4-6); PRECISION: the fine-tuning's products, f32 (default) or bf16 (the six-epoch
# numbers: EPOCHS=6 PRECISION=bf16); EMA: the fine-tuning's weight-average decay, 0 (off, the
# default) or e.g. 0.999 (the eight-epoch numbers: EPOCHS=8 EMA=0.999); AVERAGE: epochs whose
# models are kept (`--keep-epochs`) and averaged into one more model per arm, NAME-avg (`bertlu
# average`, e.g. AVERAGE=4,5,6); MAX_LEN: the pieces a text the test scores read (`eval
# --max-len`, e.g. 384; default the models' 128). Each stage is skipped when its output is
# complete, and an interrupted training stage resumes from its checkpoint. BERTLU overrides the binary.
DEFAULT_W=runs/debtags-minilm
. "$(dirname "$0")/stages.sh"
M=${MINILM:-$HOME/.cache/bertlu/all-MiniLM-L6-v2}
EPOCHS=${EPOCHS:-2}
BUDGET=${BUDGET:-20m}
if [ -n "${DAPT_EPOCHS:-}" ]; then DAPT_LENGTH=(--epochs "$DAPT_EPOCHS"); else DAPT_LENGTH=(--time-budget "$BUDGET"); fi
PRECISION=${PRECISION:-f32}
EMA=${EMA:-0}
AVERAGE=${AVERAGE:-}

[ -f "$M/model.safetensors" ] || bash "$(dirname "$0")/../../shared/models/fetch-minilm.sh" "$M"
done_model "$W/minilm" || timed import "$B" import-hf "$M" --out "$W/minilm"
done_model "$W/lin" || timed linear "$B" linear --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/lin" --tune-thresholds micro

finetune() {  # NAME ARGS…: one arm's classifier
    local name=$1; shift
    done_model "$W/$name" || timed "$name" "$B" finetune --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/$name" \
        --epochs "$EPOCHS" --pooling mean --set model.max_len=128 --patience 0 --seed 42 --tune-thresholds micro --precision "$PRECISION" --ema "$EMA" \
        ${AVERAGE:+--keep-epochs} "$@" $(resume "$W/$name")
    [ -z "$AVERAGE" ] || average "$name"
}
average() {  # NAME: the mean weights of the arm's epochs in AVERAGE, its threshold tuned on validation
    local epochs
    epochs=$(echo "$AVERAGE" | tr ',' '\n' | sed "s|^|$W/$1/epochs/epoch-|" | paste -sd, -)
    done_model "$W/$1-avg" || timed "$1-avg" "$B" average --model "$epochs" --out "$W/$1-avg" --tune-on "$D/valid.txt.gz"
}
with_linear() {  # NAME: the arm's classifier and the linear model, the share chosen on validation
    done_model "$W/$1+lin" || timed "$1+lin" "$B" ensemble --model "$W/$1,$W/lin" --out "$W/$1+lin" \
        --tune-on "$D/valid.txt.gz" --tune-linear-share
}

finetune a-direct --init "$W/minilm" --lr 3e-3 --backbone-lr-scale 0.1
with_linear a-direct
[ -z "$AVERAGE" ] || with_linear a-direct-avg
done_model "$W/dapt" || timed dapt "$B" pretrain --init "$W/minilm" --corpus "$D/corpus.txt.gz" --out "$W/dapt" \
    --tasks mlm --lr 1e-4 "${DAPT_LENGTH[@]}" --set model.max_len=128 --seed 42 $(resume "$W/dapt")
finetune b-dapt --init "$W/dapt" --lr 3e-3 --backbone-lr-scale 0.1
with_linear b-dapt
[ -z "$AVERAGE" ] || with_linear b-dapt-avg
MODELS="lin a-direct a-direct+lin b-dapt b-dapt+lin"
[ -z "$AVERAGE" ] || MODELS="$MODELS a-direct-avg a-direct-avg+lin b-dapt-avg b-dapt-avg+lin"
if [ "${RANDOM_INIT:-0}" = 1 ]; then
    finetune c-random --vocab "$W/minilm" --config "$W/minilm/config.toml" --lr 1e-3
    MODELS="$MODELS c-random"
fi

for m in $MODELS; do
    printf '%s ' "$m"
    "$B" eval --model "$W/$m" --data "$D/test.txt.gz" --json ${MAX_LEN:+--max-len "$MAX_LEN"}
done | tee "$W/test.txt"
