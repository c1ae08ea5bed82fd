#!/usr/bin/env python3
"""Builds a sentence-pair classification set from a labelled fastText file of descriptions.

Each description with at least two sentences gives one pair `first sentence<TAB>the rest`:
half of them keep their own rest (`__label__match`), the other half get the rest of another
description of the same file (`__label__mismatch`). Sentences are split as `bertlu` splits
them (after . ! ? followed by a space and a character that is not lower-case, or after 。！？).

    python3 bench/make_pairs.py IN.txt.gz OUT.txt [--seed S] [--limit N]
"""
import argparse
import gzip
import random
import re

SPLIT = re.compile(r'(?<=[.!?])["\')\]]*\s+(?=[^\s])(?![a-z])|(?<=[。！？])')


def sentences(text):
    return [s.strip() for s in SPLIT.split(text) if s.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    opener = gzip.open if a.input.endswith(".gz") else open
    docs = []
    with opener(a.input, "rt", encoding="utf-8") as f:
        for line in f:
            words = [w for w in line.split() if not w.startswith("__label__")]
            s = sentences(" ".join(words))
            if len(s) >= 2:
                docs.append((s[0], " ".join(s[1:])))
    rng = random.Random(a.seed)
    rng.shuffle(docs)
    if a.limit:
        docs = docs[: a.limit]
    out = []
    for i, (first, rest) in enumerate(docs):
        if rng.random() < 0.5:
            out.append(f"{first}\t{rest} __label__match")
        else:
            j = rng.randrange(len(docs) - 1)
            j = j + 1 if j >= i else j
            out.append(f"{first}\t{docs[j][1]} __label__mismatch")
    with open(a.output, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"{a.output}: {len(out)} pairs from {a.input}")


if __name__ == "__main__":
    main()
