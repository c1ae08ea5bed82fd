#!/usr/bin/env python3
"""The same masked-LM training step as `bertlu bench --setting reference --case pretrain`, in PyTorch.

BERT-style encoder: vocabulary 8000, d_model 256, 4 post-LN layers, 4 heads, FFN 1024, GELU,
learned positions, sequences of 128, batch 32, 20 masked positions a sequence gathered and scored
against the tied token embedding (plus a bias) after a dense + GELU + LayerNorm transform; AdamW
(weight decay 0.01), gradient clipping 1.0. Prints one JSON object: seconds of each timed step and
the peak resident memory.

    pip install torch      # CPU is enough
    python3 bench/pytorch_reference.py --threads 2 --iters 20 [--bf16]

`--bf16` runs the forward pass under PyTorch's CPU autocast to bfloat16 (matrix products in bf16,
f32 weights and optimiser state), the counterpart of `bertlu bench --precision bf16`.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, D, LAYERS, HEADS, FFN, LEN, BATCH, MASKED = 8000, 256, 4, 4, 1024, 128, 32, 20


class MlmModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Embedding(LEN, D)
        self.norm = nn.LayerNorm(D)
        layer = nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.1, activation="gelu", batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.transform = nn.Linear(D, D)
        self.transform_norm = nn.LayerNorm(D)
        self.bias = nn.Parameter(torch.zeros(VOCAB))

    def forward(self, ids, pad, positions, targets):
        x = F.dropout(self.norm(self.tok(ids) + self.pos(torch.arange(ids.shape[1]))), 0.1, self.training)
        h = self.encoder(x, src_key_padding_mask=pad)
        picked = h.reshape(-1, D)[positions]
        z = self.transform_norm(F.gelu(self.transform(picked)))
        logits = z @ self.tok.weight.t() + self.bias
        return F.cross_entropy(logits, targets)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bf16", action="store_true", help="forward pass under torch.autocast('cpu', dtype=torch.bfloat16)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ids = torch.randint(5, VOCAB, (BATCH, LEN))
    ids[:, 0], ids[:, -1] = 2, 3
    pad = torch.zeros(BATCH, LEN, dtype=torch.bool)
    rows = [torch.randperm(LEN - 2)[:MASKED].sort().values + 1 for _ in range(BATCH)]
    positions = torch.cat([r + i * LEN for i, r in enumerate(rows)])
    targets = ids.reshape(-1)[positions].clone()
    masked = ids.clone().reshape(-1)
    masked[positions] = 4  # [MASK]
    masked = masked.reshape(BATCH, LEN)
    model = MlmModel()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(masked, pad, positions, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    secs = []
    for _ in range(a.iters):
        t = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "pytorch-bf16" if a.bf16 else "pytorch", "torch": torch.__version__, "threads": a.threads, "seconds": secs,
                      "tokens": BATCH * LEN, "examples": BATCH, "peak_rss_mib": peak_mib}))


if __name__ == "__main__":
    main()
