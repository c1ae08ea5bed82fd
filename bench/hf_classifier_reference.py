#!/usr/bin/env python3
"""A classifier written by `bertlu export-hf`, run by python `transformers`, against `bertlu
predict --probs --threshold 0` on the same texts: `python3 bench/hf_classifier_reference.py
HF_DIR TEXTS BERTLU_PROBS`. Prints the largest absolute probability difference and whether every
text gets the same labels at 0.5. Needs `pip install torch transformers`.
"""
import sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

hf_dir, texts_path, probs_path = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(hf_dir)
model = AutoModelForSequenceClassification.from_pretrained(hf_dir).eval()
multi = model.config.problem_type == "multi_label_classification"
texts = [l.rstrip("\n") for l in open(texts_path, encoding="utf-8")]
worst, same = 0.0, 0
with torch.no_grad():
    for text, line in zip(texts, open(probs_path, encoding="utf-8")):
        enc = tok(*text.split("\t"), truncation=True, max_length=tok.model_max_length, return_tensors="pt")
        logits = model(**enc).logits[0]
        p = torch.sigmoid(logits) if multi else torch.softmax(logits, -1)
        theirs = {model.config.id2label[i]: float(p[i]) for i in range(len(p))}
        words = line.split()
        ours = {words[i][len("__label__"):]: float(words[i + 1]) for i in range(0, len(words), 2)}
        worst = max(worst, max(abs(ours[k] - theirs[k]) for k in ours))
        same += {k for k, v in ours.items() if v >= 0.5} == {k for k, v in theirs.items() if v >= 0.5}
print(f"{len(texts)} texts: max abs probability difference {worst:.2e} (bertlu prints 5 decimals); same labels at 0.5: {same}/{len(texts)}")
