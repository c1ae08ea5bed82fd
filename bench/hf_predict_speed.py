#!/usr/bin/env python3
"""Prediction speed of python `transformers` + PyTorch on a classifier written by `bertlu
export-hf`, measured as `bertlu bench --model M --data FILE` measures bertlu's: the whole labelled
file in batches of texts of similar length (tokenising included, after one untimed pass), and the
first N examples one at a time. Run both on the same model and file:

    bertlu bench --model CLF --data test.txt.gz --iters 3 --singles 200
    python3 bench/hf_predict_speed.py CLF_HF test.txt.gz --passes 3 --singles 200 --threads 2

With `--bf16` the model runs under `torch.autocast("cpu", dtype=torch.bfloat16)`: PyTorch's own
mixed precision, to set beside `bertlu bench --model CLF --precision bf16`.

Label words (`__label__x`) are dropped; a TAB makes a text a sentence pair. That both sides
compute the same probabilities is `bench/hf_classifier_reference.py`'s check. Needs `pip install
torch transformers`.
"""
import argparse
import gzip
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def read_texts(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [" ".join(w for w in line.rstrip("\n").split(" ") if not w.startswith("__label__")).strip() for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="run under torch.autocast(cpu, bfloat16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    multi = model.config.problem_type == "multi_label_classification"
    texts = read_texts(args.data)
    max_len = min(tok.model_max_length, model.config.max_position_embeddings)

    def encode(batch):
        """Token ids of each text (a TAB makes it a pair), unpadded: one dict a text."""
        pairs = [t.split("\t") for t in batch]
        firsts = [p[0] for p in pairs]
        seconds = [p[1] for p in pairs] if all(len(p) == 2 for p in pairs) else None
        enc = tok(firsts, seconds, truncation=True, max_length=max_len)
        return [{k: enc[k][i] for k in enc} for i in range(len(batch))]

    def predict(features):
        logits = model(**tok.pad(features, return_tensors="pt")).logits
        return torch.sigmoid(logits) if multi else torch.softmax(logits, -1)

    def whole_file():
        # every text tokenised once, then batches of similar length, as bertlu forms them
        features = encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(features[i]["input_ids"]))
        for s in range(0, len(order), args.batch_size):
            predict([features[i] for i in order[s:s + args.batch_size]])

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16)
    with torch.inference_mode(), autocast:
        whole_file()
        passes = []
        for _ in range(args.passes):
            start = time.perf_counter()
            whole_file()
            passes.append(time.perf_counter() - start)
        singles = []
        for t in texts[: args.singles]:
            start = time.perf_counter()
            predict(encode([t]))
            singles.append(time.perf_counter() - start)
    p = statistics.median(passes)
    print(f"| case | median | examples/s |\n|---|---|---|")
    print(f"| whole file, batch {args.batch_size} ({len(texts)} examples) | {p:.3f} s | {len(texts) / p:.0f} |")
    if singles:
        s = statistics.median(singles)
        print(f"| one example at a time ({len(singles)} examples) | {s * 1e3:.2f} ms | {1 / s:.0f} |")
    print(f"python transformers {__import__('transformers').__version__}, torch {torch.__version__}, {args.threads} threads{', bf16 autocast' if args.bf16 else ''}; median of {args.passes} passes after one warm-up pass.")


if __name__ == "__main__":
    main()
