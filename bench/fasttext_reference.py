#!/usr/bin/env python3
"""fastText on a fastText-format labelled task: test micro/macro-F1 and prediction speed.

The baseline bertlu is compared with: one-vs-all loss (independent sigmoids, like bertlu's
multi-label head), word bigrams, 25 epochs, decision threshold 0.5, text lower-cased (as
bertlu's tokenizer does), and the learning rate chosen on the validation file from a grid, as
`bertlu compare` chooses each arm's. Scores are computed as
bertlu's `eval` computes them (micro over all decisions; macro over every label that occurs in
the gold labels or the predictions). Speed: median of several passes predicting the whole test
file (fastText's multi-line predict), and one-example-at-a-time latency; the same measurements
`bertlu bench --model M --data FILE` makes.

    python3 -m pip install fasttext-wheel
    python3 bench/fasttext_reference.py --train train.txt.gz --valid valid.txt.gz --test test.txt.gz [--threads 2] [--json]
"""
import argparse
import gzip
import json
import os
import statistics
import tempfile
import time


LABEL = "__label__"


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    texts, golds = [], []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            words = line.split()
            golds.append(sorted({w[len(LABEL):] for w in words if w.startswith(LABEL)}))
            texts.append(" ".join(w.lower() for w in words if not w.startswith(LABEL)))
    return texts, golds


def scores(pred, gold):
    counts = {}
    exact = 0
    for p, g in zip(pred, gold):
        p, g = set(p), set(g)
        exact += p == g
        for x in p | g:
            c = counts.setdefault(x, [0, 0, 0])
            c[0] += x in p and x in g
            c[1] += x in p and x not in g
            c[2] += x in g and x not in p

    def f1(tp, fp, fn):
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    return {"micro_f1": f1(tp, fp, fn), "macro_f1": sum(f1(*c) for c in counts.values()) / max(len(counts), 1), "exact_match": exact / len(gold)}


def main():
    import fasttext  # here, so tfidf_reference.py can reuse read() and scores() without it

    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--lr-grid", default="0.05,0.1,0.3")
    ap.add_argument("--epoch", type=int, default=25)
    ap.add_argument("--ngrams", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    texts, golds = read(a.train)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for t, g in zip(texts, golds):
            f.write(" ".join(LABEL + x for x in g) + " " + t + "\n")
        train_txt = f.name

    def predict(model, texts):
        # the low-level call: fasttext-wheel's Python wrapper breaks on NumPy 2
        labels, _ = model.f.multilinePredict(texts, -1, a.threshold, "strict")
        return [[l[len(LABEL):] for l in ls] for ls in labels]

    valid_texts, valid_gold = read(a.valid)
    best = None
    grid = {}
    for lr in (float(x) for x in a.lr_grid.split(",")):
        start = time.perf_counter()
        m = fasttext.train_supervised(train_txt, loss="ova", wordNgrams=a.ngrams, epoch=a.epoch, lr=lr, thread=a.threads, seed=a.seed, verbose=0)
        secs = time.perf_counter() - start
        v = scores(predict(m, valid_texts), valid_gold)["micro_f1"]
        grid[lr] = v
        if best is None or v > best[0]:
            best = (v, lr, m, secs)
    os.unlink(train_txt)
    _, lr, model, train_s = best

    test_texts, gold = read(a.test)
    def predict_all():
        return predict(model, test_texts)

    pred = predict_all()
    s = scores(pred, gold)
    passes = []
    for _ in range(a.passes):
        t = time.perf_counter()
        predict_all()
        passes.append(time.perf_counter() - t)
    singles = []
    for text in test_texts[: a.singles]:
        t = time.perf_counter()
        model.f.predict(text, -1, a.threshold, "strict")
        singles.append(time.perf_counter() - t)
    out = {
        "valid_micro_f1_by_lr": grid,
        "chosen_lr": lr,
        "train_seconds": train_s,
        "test": s,
        "examples": len(test_texts),
        "pass_seconds_median": statistics.median(passes),
        "examples_per_second": len(test_texts) / statistics.median(passes),
        "single_ms_median": statistics.median(singles) * 1e3,
        "threads": a.threads,
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"fastText (ova, wordNgrams {a.ngrams}, {a.epoch} epochs, threshold {a.threshold}, {a.threads} threads; lr {lr} chosen on validation from {grid}): "
              f"test micro-F1 {s['micro_f1']:.3f}, macro-F1 {s['macro_f1']:.3f}, exact match {s['exact_match']:.3f}; "
              f"training {train_s:.1f} s; whole test file {out['pass_seconds_median']:.3f} s = {out['examples_per_second']:.0f} examples/s; "
              f"one at a time {out['single_ms_median']:.3f} ms")


if __name__ == "__main__":
    main()
