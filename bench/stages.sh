# Shared by the bench/debtags_*.sh recipes, sourced after setting DEFAULT_W: the data directory
# (first argument), the work directory (second, else $DEFAULT_W) and the binary ($BERTLU). Each
# stage's output and time go to $W (a resumed stage's log is added to), and a stage whose output is
# complete is skipped.
set -euo pipefail
D=${1:-../shared/datasets/debtags}
W=${2:-$DEFAULT_W}
B=${BERTLU:-target/release/bertlu}
mkdir -p "$W"
log() { printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" | tee -a "$W/stages.log"; }
done_model() { [ -f "$1/model.json" ]; }
# --resume when an earlier run of this stage left a training checkpoint behind
resume() { compgen -G "$(dirname "$1")/.$(basename "$1").partial/checkpoints/step-*" > /dev/null && echo --resume || true; }
timed() {
    local name=$1; shift
    local t0=$SECONDS
    "$@" >> "$W/$name.log" 2>&1 || { log "$name failed (see $W/$name.log)"; exit 1; }
    log "$name: $((SECONDS - t0)) s"
}
# The recipes' common start (needs D and B too): an 8,000-piece vocabulary trained on the corpus
# and a small TextCNN pre-trained on it with the masked LM, 3 epochs.
pretrain_textcnn() {
    [ -f "$W/vocab-8000/tokenizer.json" ] || timed vocab "$B" vocab --corpus "$D/corpus.txt.gz" --out "$W/vocab-8000" --size 8000
    done_model "$W/pre-cnn" || timed pretrain "$B" pretrain --corpus "$D/corpus.txt.gz" --vocab "$W/vocab-8000" --out "$W/pre-cnn" \
        --backbone textcnn --preset small --epochs 3 --lr 1e-3 --seed 1 $(resume "$W/pre-cnn")
}
