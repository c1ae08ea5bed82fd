#!/usr/bin/env bash
# Fine-tuned TextCNNs and the TF-IDF + linear SVM in one ensemble, end to end from the raw
# files: an 8,000-piece vocabulary, masked-LM pre-training of a small TextCNN on the corpus,
# five pre-trained members (10 epochs, seeds 1–5, BCE/BCE/ASL/BCE/ASL), the linear model, the
# linear model's share chosen on validation (bench/blend_reference.py), and the ensemble with
# that share; thresholds tuned on validation, test scored once at the end. SCRATCH=3 also
# trains that many from-scratch twins (same vocabulary, seeds, losses) and their ensembles.
# Measured (README, "The linear model as an ensemble member"): five pre-trained TextCNNs
# 0.716 / 0.456 test micro / macro-F1, with the linear model (share 0.25) 0.720 / 0.463;
# 1 h 36 min on 2 cores (shared with builds and tests part of the time) from the vocabulary to
# the fifth member; the linear model 161 s, each ensemble under 30 s.
#
#   bash bench/debtags_blend.sh [DATA_DIR] [WORK_DIR]
#
# Each stage is skipped when its output is already complete. BERTLU overrides the binary.
set -euo pipefail
D=${1:-../shared/datasets/debtags}
W=${2:-runs/debtags-blend}
B=${BERTLU:-target/release/bertlu}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$W"
log() { printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" | tee -a "$W/stages.log"; }
timed() {
    local name=$1; shift
    local t0=$SECONDS
    "$@" > "$W/$name.log" 2>&1 || { log "$name failed (see $W/$name.log)"; exit 1; }
    log "$name: $((SECONDS - t0)) s"
}
done_model() { [ -f "$1/model.json" ]; }
probs() {  # every label's probability on valid and test, for blend_reference.py
    for s in valid test; do
        [ -s "$W/$1.$s.probs" ] || "$B" predict --model "$W/$1" --threshold 0 --probs "$D/$s.txt.gz" > "$W/$1.$s.probs"
    done
}

[ -f "$W/vocab-8000/tokenizer.json" ] || timed vocab "$B" vocab --corpus "$D/corpus.txt.gz" --out "$W/vocab-8000" --size 8000
done_model "$W/pre-cnn" || timed pretrain "$B" pretrain --corpus "$D/corpus.txt.gz" --vocab "$W/vocab-8000" --out "$W/pre-cnn" \
    --backbone textcnn --preset small --epochs 3 --lr 1e-3 --seed 1
done_model "$W/lin" || timed linear "$B" linear --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/lin" --tune-thresholds micro
probs lin

member() {  # NAME SEED LOSS ARGS…
    local name=$1 seed=$2 loss=$3; shift 3
    done_model "$W/$name" || timed "$name" "$B" finetune --train "$D/train.txt.gz" --valid "$D/valid.txt.gz" --out "$W/$name" "$@" \
        --epochs 10 --lr 3e-3 --seed "$seed" --loss "$loss" --patience 0 --tune-thresholds micro
    probs "$name"
}
ensemble() {  # NAME MEMBERS(comma-separated names)
    local name=$1 members=$2
    local paths; paths=$(echo "$members" | sed "s#\([^,]*\)#$W/\1#g")
    done_model "$W/$name" || timed "$name" "$B" ensemble --model "$paths" --out "$W/$name" --tune-on "$D/valid.txt.gz"
    # the linear model's share, chosen on validation together with a shared threshold
    local share; share=$(cd "$W" && python3 "$HERE/blend_reference.py" --valid "$D/valid.txt.gz" --test "$D/test.txt.gz" \
        --members "$members" --linear lin | tee "$name+lin.blend.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blend"]["linear_weight"])')
    local n; n=$(echo "$members" | tr ',' '\n' | wc -l)
    # each of the n members weighs (1 − share)/n, the linear model share
    local weights; weights=$(python3 -c "n=$n; s=$share; print(','.join([str(round((1-s)/n, 6))]*n + [str(s)]))")
    done_model "$W/$name+lin" || timed "$name+lin" "$B" ensemble --model "$paths,$W/lin" --weights "$weights" --out "$W/$name+lin" --tune-on "$D/valid.txt.gz"
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
