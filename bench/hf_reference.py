#!/usr/bin/env python3
"""bertlu's vectors of an imported HuggingFace BERT against python `transformers` on the same
texts: `python3 bench/hf_reference.py HF_DIR TEXTS OUT_PREFIX`, after
`bertlu embed --model IMPORTED --data TEXTS --out OUT_PREFIX-{cls,mean,max}.jsonl --pooling …`.
Prints the largest absolute difference per pooling (the [CLS] state is the last hidden state at
position 0; mean and max pool every real position) and, for mean pooling with unit length, the
sentence-transformers vectors. Needs `pip install torch transformers`.
"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer

hf_dir, texts_path, prefix = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(hf_dir)
model = AutoModel.from_pretrained(hf_dir).eval()
texts = [l.rstrip("\n") for l in open(texts_path, encoding="utf-8")]
ref = {"cls": [], "mean": [], "max": [], "unit": []}
pieces = []
with torch.no_grad():
    for t in texts:
        args = t.split("\t")
        enc = tok(*args, truncation=True, max_length=512, return_tensors="pt")
        h = model(**enc).last_hidden_state[0]
        pieces.append(h.shape[0])
        ref["cls"].append(h[0]); ref["mean"].append(h.mean(0)); ref["max"].append(h.max(0).values)
        ref["unit"].append(torch.nn.functional.normalize(h.mean(0), dim=0))
def load(path):
    return [torch.tensor(json.loads(l)) for l in open(path)]
print(f"{len(texts)} texts, {min(pieces)}–{max(pieces)} pieces")
for pooling in ["cls", "mean", "max", "unit"]:
    ours = load(f"{prefix}-{pooling}.jsonl")
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, ref[pooling]))
    print(f"{pooling}: max abs difference {worst:.2e}")
