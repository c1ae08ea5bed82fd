#!/usr/bin/env python3
"""How much of a linear model to mix into an ensemble: a weight chosen on validation.

Reads probability files written by `bertlu predict --threshold 0 --probs FILE` (every label with
its probability), one per model and split, averages the fine-tuned members (their
probabilities, or their logits with --logits), mixes in the `bertlu linear` model with weight w,

    p = (1 − w) · mean(members) + w · linear,

and chooses w (0, 0.05, …, 1) and one shared threshold (0.05, …, 0.95) together for micro-F1
on validation; the test file is scored once with the chosen pair. Also prints the two ends
(members alone, linear alone) chosen the same way. Scores as bertlu's `eval` computes them.

    for m in M1 M2 LIN; do for s in valid test; do
        bertlu predict --model $m --threshold 0 --probs $s.txt.gz > $m.$s.probs; done; done
    python3 bench/blend_reference.py --valid valid.txt.gz --test test.txt.gz --members M1,M2 --linear LIN
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fasttext_reference import read, scores  # noqa: E402

PREFIX = "__label__"


def read_probs(path, index, n):
    """A `predict --threshold 0 --probs` file as an (examples, labels) array in `index` order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = np.zeros(len(index))
            words = line.split()
            for name, p in zip(words[::2], words[1::2]):
                row[index[name[len(PREFIX):]]] = float(p)
            rows.append(row)
    if len(rows) != n:
        sys.exit(f"{path}: {len(rows)} lines, expected {n}")
    return np.array(rows)


def label_index(path):
    with open(path, encoding="utf-8") as f:
        words = f.readline().split()
    return {name[len(PREFIX):]: j for j, name in enumerate(sorted(words[::2]))}


def decide(probs, classes, t):
    return [[classes[j] for j in np.flatnonzero(row >= t)] for row in probs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--valid", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--members", required=True, help="comma-separated prefixes of PREFIX.valid.probs / PREFIX.test.probs")
    ap.add_argument("--linear", required=True, help="prefix of the linear model's probability files")
    ap.add_argument("--logits", action="store_true", help="average the members' logits instead of their probabilities")
    a = ap.parse_args()
    (_, yva), (_, yte) = read(a.valid), read(a.test)
    index = label_index(f"{a.linear}.valid.probs")
    classes = sorted(index, key=index.get)

    def load(prefix, split, n):
        return np.clip(read_probs(f"{prefix}.{split}.probs", index, n), 1e-5, 1 - 1e-5)

    def members(split, n):
        ps = [load(m, split, n) for m in a.members.split(",")]
        if a.logits:
            z = np.mean([np.log(p / (1 - p)) for p in ps], axis=0)
            return 1 / (1 + np.exp(-z))
        return np.mean(ps, axis=0)

    pv, pt = members("valid", len(yva)), members("test", len(yte))
    lv, lt = load(a.linear, "valid", len(yva)), load(a.linear, "test", len(yte))
    out = {}
    for name, weights in [("members", [0.0]), ("linear", [1.0]), ("blend", [round(0.05 * i, 2) for i in range(21)])]:
        best = None
        for w in weights:
            mix = (1 - w) * pv + w * lv
            for t in np.arange(0.05, 0.96, 0.05):
                f = scores(decide(mix, classes, t), yva)["micro_f1"]
                if best is None or f > best[0] + 1e-12:
                    best = (f, w, round(float(t), 2))
        f, w, t = best
        test = scores(decide((1 - w) * pt + w * lt, classes, t), yte)
        out[name] = {"linear_weight": w, "threshold": t, "valid_micro_f1": round(f, 4),
                     "test_micro_f1": round(test["micro_f1"], 4), "test_macro_f1": round(test["macro_f1"], 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
