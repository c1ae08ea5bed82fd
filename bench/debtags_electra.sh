#!/usr/bin/env bash
# ELECTRA against the masked LM at the same wall-clock budget of pre-training, on Debtags (the
# issue's decisive measurement): an 8,000-piece vocabulary, each objective pre-trained for 120
# minutes' worth of steps of 2 idle cores, then one `compare` fine-tuning scratch, MLM and ELECTRA
# the same way, each arm's learning rate chosen on validation, test scored once. The small
# Transformer first (5 epochs, mean pooling, lr from 5e-4, 1e-3, 2e-3), then with TEXTCNN=1 the
# small TextCNN (4 epochs, lr from 1e-3, 3e-3).
#
# The budget is fixed in steps, from step times measured side by side on idle cores (each
# objective pre-trained for 300 steps, twice, medians, on a 2-core AVX2 EPYC: Transformer masked
# LM 0.297 s, ELECTRA 0.332 s; TextCNN 0.117 s and 0.175 s): 7,200 s / step time. On another
# machine measure the same way and set the *_STEPS variables. With PARALLEL=1 (default) an
# arm's two pre-trainings run at once on one thread each (their steps are fixed, so sharing the
# cores changes only how long they take); PARALLEL=0 runs them one after the other on every core.
#
#   bash bench/debtags_electra.sh [DATA_DIR] [WORK_DIR]
#
# Each stage is skipped when its output is complete, and a stopped one resumes from its
# checkpoint (a comparison with `compare --resume`), so the hours it takes may be spread over
# several sittings. BERTLU overrides the binary.
DEFAULT_W=runs/debtags-electra
. "$(dirname "$0")/stages.sh"

[ -f "$W/vocab-8000/tokenizer.json" ] || timed vocab "$B" vocab --corpus "$D/corpus.txt.gz" --out "$W/vocab-8000" --size 8000
arm() {  # NAME BACKBONE TASKS EPOCHS STEPS
    done_model "$W/$1" || timed "$1" "$B" pretrain --corpus "$D/corpus.txt.gz" --vocab "$W/vocab-8000" --out "$W/$1" \
        --backbone "$2" --preset small --tasks "$3" --lr 1e-3 --seed 1 --epochs "$4" --max-steps "$5" $(resume "$W/$1")
}
both() {  # MLM_NAME ELECTRA_NAME BACKBONE MLM_EPOCHS MLM_STEPS ELECTRA_EPOCHS ELECTRA_STEPS
    if [ "${PARALLEL:-1}" = 1 ]; then
        RAYON_NUM_THREADS=1 arm "$1" "$3" mlm "$4" "$5" & local mlm=$!
        RAYON_NUM_THREADS=1 arm "$2" "$3" electra "$6" "$7" & local electra=$!
        local failed=0
        wait $mlm || failed=1
        wait $electra || failed=1
        [ $failed = 0 ] || exit 1
    else
        arm "$1" "$3" mlm "$4" "$5"
        arm "$2" "$3" electra "$6" "$7"
    fi
}
compare() {  # NAME BACKBONE MLM_NAME ELECTRA_NAME [OPTIONS...]
    local name=$1 backbone=$2 mlm=$3 electra=$4; shift 4
    [ -f "$W/$name/compare.md" ] || timed "$name" "$B" compare --corpus "$D/corpus.txt.gz" --train "$D/train.txt.gz" \
        --valid "$D/valid.txt.gz" --test "$D/test.txt.gz" --out "$W/$name" --backbone "$backbone" --vocab "$W/vocab-8000" \
        --pretrained "$backbone=$W/$mlm" --pretrained "$backbone=$W/$electra" --seed 1 "$@" $([ -d "$W/.$name.partial" ] && echo --resume)
    cat "$W/$name/compare.md"
}

# 12 and 11 epochs of 2,035 steps, cut at the budget's steps
both mlm120 electra120 transformer 12 "${MLM_STEPS:-24240}" 11 "${ELECTRA_STEPS:-21690}"
compare cmp transformer mlm120 electra120 --set model.pooling=mean --lr-grid 5e-4,1e-3,2e-3 --epochs 5
if [ "${TEXTCNN:-0}" = 1 ]; then
    both cnn-mlm120 cnn-electra120 textcnn 31 "${CNN_MLM_STEPS:-61540}" 21 "${CNN_ELECTRA_STEPS:-41140}"
    compare cmp-cnn textcnn cnn-mlm120 cnn-electra120 --lr-grid 1e-3,3e-3 --epochs 4
fi
