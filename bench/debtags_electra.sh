#!/usr/bin/env bash
# ELECTRA against the masked LM at the same wall-clock budget of pre-training, the small
# Transformer on Debtags (the issue's decisive measurement): an 8,000-piece vocabulary, each
# objective pre-trained for 120 minutes' worth of steps of 2 idle cores, then one `compare`
# fine-tuning scratch, MLM and ELECTRA the same way (5 epochs, mean pooling, each arm's learning
# rate chosen on validation from 5e-4, 1e-3, 2e-3, test scored once).
#
# The budget is fixed in steps, from step times measured side by side on idle cores (the two
# objectives pre-trained for 300 steps each, twice, medians: masked LM 0.297 s, ELECTRA 0.332 s a
# step on a 2-core AVX2 EPYC): 7,200 s / step time. Another machine: measure the same way and set
# MLM_STEPS and ELECTRA_STEPS. With PARALLEL=1 (default) the two pre-trainings run at once on one
# thread each (their steps are fixed, so sharing the cores changes only how long they take);
# PARALLEL=0 runs them one after the other on every core.
#
#   bash bench/debtags_electra.sh [DATA_DIR] [WORK_DIR]
#
# Each stage is skipped when its output is complete, and a stopped one resumes from its
# checkpoint (the comparison with `compare --resume`), so the hours it takes may be spread over
# several sittings. BERTLU overrides the binary.
DEFAULT_W=runs/debtags-electra
. "$(dirname "$0")/stages.sh"

[ -f "$W/vocab-8000/tokenizer.json" ] || timed vocab "$B" vocab --corpus "$D/corpus.txt.gz" --out "$W/vocab-8000" --size 8000
arm() {  # NAME TASKS EPOCHS STEPS
    done_model "$W/$1" || timed "$1" "$B" pretrain --corpus "$D/corpus.txt.gz" --vocab "$W/vocab-8000" --out "$W/$1" \
        --backbone transformer --preset small --tasks "$2" --lr 1e-3 --seed 1 --epochs "$3" --max-steps "$4" $(resume "$W/$1")
}
MLM_STEPS=${MLM_STEPS:-24240}
ELECTRA_STEPS=${ELECTRA_STEPS:-21690}
if [ "${PARALLEL:-1}" = 1 ]; then
    RAYON_NUM_THREADS=1 arm mlm120 mlm 12 "$MLM_STEPS" & mlm=$!
    RAYON_NUM_THREADS=1 arm electra120 electra 11 "$ELECTRA_STEPS" & electra=$!
    failed=0
    wait $mlm || failed=1
    wait $electra || failed=1
    [ $failed = 0 ] || exit 1
else
    arm mlm120 mlm 12 "$MLM_STEPS"
    arm electra120 electra 11 "$ELECTRA_STEPS"
fi

[ -f "$W/cmp/compare.md" ] || timed compare "$B" compare --corpus "$D/corpus.txt.gz" --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" \
    --test "$D/test.txt.gz" --out "$W/cmp" --backbone transformer --vocab "$W/vocab-8000" \
    --pretrained "transformer=$W/mlm120" --pretrained "transformer=$W/electra120" --set model.pooling=mean \
    --lr-grid 5e-4,1e-3,2e-3 --epochs 5 --seed 1 $([ -d "$W/.cmp.partial" ] && echo --resume)
cat "$W/cmp/compare.md"
