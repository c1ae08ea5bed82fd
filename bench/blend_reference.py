#!/usr/bin/env python3
"""Blend of bertlu models' probabilities with a TF-IDF + linear SVM's, chosen on validation.

Answers one question before anything is built in bertlu: do a linear bag-of-words model's
errors differ enough from the fine-tuned models' that averaging the two helps? The SVM is
tfidf_reference.py's (word uni- and bigrams, sublinear tf, one LinearSVC a label, C fixed); its
margins become probabilities through one logistic fit on the validation margins (Platt
scaling, one slope and bias for every label). bertlu's probabilities come from
`bertlu predict --threshold 0 --probs FILE` (every label with its probability), one file per
model and split. The blend weight of the SVM and one shared threshold are chosen together on
validation for micro-F1; the test set is scored once with the chosen pair. Members' bertlu
probabilities are averaged (or their logits, --logits) before the blend.

    bertlu predict --model M --threshold 0 --probs valid.txt.gz > M.valid.probs   # and test
    python3 bench/blend_reference.py --train train.txt.gz --valid valid.txt.gz --test test.txt.gz \\
        --probs M1,M2,...   # prefixes: reads M1.valid.probs and M1.test.probs
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fasttext_reference import read, scores  # noqa: E402

PREFIX = "__label__"


def read_probs(path, index, n):
    """A `predict --threshold 0 --probs` file as an (examples, labels) array in `index` order."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            row = np.zeros(len(index))
            words = line.split()
            for name, p in zip(words[::2], words[1::2]):
                j = index.get(name[len(PREFIX):]) if name.startswith(PREFIX) else None
                if j is not None:
                    row[j] = float(p)
            rows.append(row)
    if len(rows) != n:
        sys.exit(f"{path}: {len(rows)} lines, expected {n}")
    return np.array(rows)


def decide(probs, classes, t):
    return [[classes[j] for j in np.flatnonzero(row >= t)] for row in probs]


def best_pair(pv, sv, classes, gold, weights):
    best = None
    for w in weights:
        mix = (1 - w) * pv + w * sv
        for t in np.arange(0.05, 0.96, 0.05):
            f = scores(decide(mix, classes, t), gold)["micro_f1"]
            if best is None or f > best[0] + 1e-12:
                best = (f, w, round(float(t), 2))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--probs", required=True, help="comma-separated prefixes of PREFIX.valid.probs / PREFIX.test.probs")
    ap.add_argument("--c", type=float, default=1.0)
    ap.add_argument("--logits", action="store_true", help="average the members' logits instead of their probabilities")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    (xtr, ytr), (xva, yva), (xte, yte) = read(a.train), read(a.valid), read(a.test)
    mlb = MultiLabelBinarizer().fit(ytr)
    classes = list(mlb.classes_)
    index = {c: j for j, c in enumerate(classes)}

    def combine(split, n):
        ps = [np.clip(read_probs(f"{p}.{split}.probs", index, n), 1e-5, 1 - 1e-5) for p in a.probs.split(",")]
        if a.logits:
            z = np.mean([np.log(p / (1 - p)) for p in ps], axis=0)
            return 1 / (1 + np.exp(-z))
        return np.mean(ps, axis=0)

    pv, pt = combine("valid", len(xva)), combine("test", len(xte))
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    A = vec.fit_transform(xtr)
    svm = OneVsRestClassifier(LinearSVC(C=a.c)).fit(A, mlb.transform(ytr))
    mv, mt = svm.decision_function(vec.transform(xva)), svm.decision_function(vec.transform(xte))
    platt = LogisticRegression(C=100.0).fit(mv.reshape(-1, 1), mlb.transform(yva).reshape(-1))
    sv = platt.predict_proba(mv.reshape(-1, 1))[:, 1].reshape(mv.shape)
    st = platt.predict_proba(mt.reshape(-1, 1))[:, 1].reshape(mt.shape)

    out = {}
    for name, weights in [("bertlu", [0.0]), ("svm", [1.0]), ("blend", [round(0.05 * i, 2) for i in range(0, 21)])]:
        f, w, t = best_pair(pv, sv, classes, yva, weights)
        test = scores(decide((1 - w) * pt + w * st, classes, t), yte)
        out[name] = {"svm_weight": w, "threshold": t, "valid_micro_f1": round(f, 4),
                     "test_micro_f1": round(test["micro_f1"], 4), "test_macro_f1": round(test["macro_f1"], 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
