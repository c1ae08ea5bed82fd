#!/usr/bin/env bash
# Fine-tuned TextCNNs and the TF-IDF + linear SVM in one ensemble, end to end from the raw
# files: an 8,000-piece vocabulary, masked-LM pre-training of a small TextCNN on the corpus,
# five pre-trained members (10 epochs, seeds 1–5, BCE/BCE/ASL/BCE/ASL), the linear model, and
# their ensemble with the linear model's share chosen on validation (`ensemble
# --tune-linear-share`); thresholds tuned on validation, test scored once at the end. SCRATCH=3 also
# trains that many from-scratch twins (same vocabulary, seeds, losses) and their ensembles.
# Measured (docs/results.md, "The linear model as an ensemble member"): five pre-trained TextCNNs
# 0.716 / 0.456 test micro / macro-F1, with the linear model (share 0.25) 0.720 / 0.463;
# SCRATCH=3: three scratch twins + linear 0.711 / 0.461 against three pre-trained + linear 0.717 / 0.470;
# 1 h 36 min on 2 cores (shared with builds and tests part of the time) from the vocabulary to
# the fifth member; the linear model 161 s, each ensemble under 30 s.
#
#   bash bench/debtags_blend.sh [DATA_DIR] [WORK_DIR]
#
# Each stage is skipped when its output is already complete. BERTLU overrides the binary.
DEFAULT_W=runs/debtags-blend
. "$(dirname "$0")/stages.sh"

pretrain_textcnn
done_model "$W/lin" || timed linear "$B" linear --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/lin" --tune-thresholds micro

member() {  # NAME SEED LOSS ARGS…
    local name=$1 seed=$2 loss=$3; shift 3
    done_model "$W/$name" || timed "$name" "$B" finetune --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/$name" "$@" \
        --epochs 10 --lr 3e-3 --seed "$seed" --loss "$loss" --patience 0 --tune-thresholds micro
}
ensemble() {  # NAME MEMBERS(comma-separated names): the members alone, and with the linear model
    local name=$1 members=$2
    local paths; paths=$(echo "$members" | sed "s#\([^,]*\)#$W/\1#g")
    done_model "$W/$name" || timed "$name" "$B" ensemble --model "$paths" --out "$W/$name" --tune-on "$D/valid.txt.gz"
    # the linear model's share of the mean, chosen on validation together with a shared threshold
    done_model "$W/$name+lin" || timed "$name+lin" "$B" ensemble --model "$paths,$W/lin" --out "$W/$name+lin" \
        --tune-on "$D/valid.txt.gz" --tune-linear-share
}

for spec in "t1-bce 1 bce" "t2-bce 2 bce" "t3-asl 3 asl" "t4-bce 4 bce" "t5-asl 5 asl"; do
    set -- $spec; member "$1" "$2" "$3" --init "$W/pre-cnn"
done
ensemble pre5 t1-bce,t2-bce,t3-asl,t4-bce,t5-asl
ensemble pre3 t1-bce,t2-bce,t3-asl
MODELS="lin t1-bce t2-bce t3-asl t4-bce t5-asl pre3 pre3+lin pre5 pre5+lin"
if [ "${SCRATCH:-0}" -gt 0 ]; then
    specs=("x1-bce 1 bce" "x2-bce 2 bce" "x3-asl 3 asl" "x4-bce 4 bce" "x5-asl 5 asl")
    names=()
    for spec in "${specs[@]:0:$SCRATCH}"; do
        set -- $spec; member "$1" "$2" "$3" --vocab "$W/vocab-8000" --preset small --backbone textcnn
        names+=("$1")
    done
    ensemble "scratch$SCRATCH" "$(IFS=,; echo "${names[*]}")"
    MODELS="$MODELS ${names[*]} scratch$SCRATCH scratch$SCRATCH+lin"
fi

for m in $MODELS; do
    printf '%s ' "$m"
    "$B" eval --model "$W/$m" --data "$D/test.txt.gz" --json
done | tee "$W/test.txt"
