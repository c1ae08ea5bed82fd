#!/usr/bin/env python3
"""TF-IDF + linear SVM (one-vs-rest) on a fastText-format labelled task: test micro/macro-F1.

The linear baseline bertlu is compared with: word unigrams and bigrams (scikit-learn's default
words: lower-cased runs of two or more letters or digits; seen in at least two
training texts), sublinear term frequency, one LinearSVC a label, C chosen on the validation
file from a grid, then one shared decision threshold on the SVM margin chosen on validation
for micro-F1 (as `bertlu tune-thresholds` chooses one for a probability). Scores are computed
as bertlu's `eval` computes them (micro over all decisions; macro over every label that occurs
in the gold labels or the predictions), with the same function as fasttext_reference.py.

    python3 -m pip install scikit-learn
    python3 bench/tfidf_reference.py --train train.txt.gz --valid valid.txt.gz --test test.txt.gz [--c-grid 0.3,1,3] [--json]
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fasttext_reference import read, scores  # noqa: E402  (fasttext itself is not needed)


def decide(margins, classes, threshold):
    return [[classes[j] for j in np.flatnonzero(row > threshold)] for row in margins]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--c-grid", default="0.3,1,3")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    (xtr, ytr), (xva, yva), (xte, yte) = read(a.train), read(a.valid), read(a.test)
    mlb = MultiLabelBinarizer().fit(ytr)
    classes = list(mlb.classes_)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    start = time.time()
    A = vec.fit_transform(xtr)
    B, C = vec.transform(xva), vec.transform(xte)
    best = None
    for c in [float(x) for x in a.c_grid.split(",")]:
        clf = OneVsRestClassifier(LinearSVC(C=c)).fit(A, mlb.transform(ytr))
        mv = clf.decision_function(B)
        for t in np.arange(-1.0, 0.51, 0.05):
            f = scores(decide(mv, classes, t), yva)["micro_f1"]
            if best is None or f > best[0]:
                best = (f, c, round(float(t), 2), clf)
        if not a.json:
            print(f"C {c}: best valid micro-F1 so far {best[0]:.4f} (C {best[1]}, threshold {best[2]})", file=sys.stderr)
    f, c, t, clf = best
    seconds = time.time() - start
    test = scores(decide(clf.decision_function(C), classes, t), yte)
    test_at_zero = scores(decide(clf.decision_function(C), classes, 0.0), yte)
    out = {"c": c, "threshold": t, "valid_micro_f1": f, "test": test, "test_threshold_0": test_at_zero, "seconds": seconds, "features": A.shape[1]}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"TF-IDF + LinearSVC (C {c}, {A.shape[1]} features, margin threshold {t} chosen on validation): "
              f"test micro-F1 {test['micro_f1']:.4f} macro-F1 {test['macro_f1']:.4f} (at margin 0: {test_at_zero['micro_f1']:.4f} / {test_at_zero['macro_f1']:.4f}); {seconds:.0f} s")


if __name__ == "__main__":
    main()
