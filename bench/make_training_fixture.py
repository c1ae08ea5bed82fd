#!/usr/bin/env python3
"""Writes tests/fixtures/hf-tiny-bert/training.json: what python `transformers` + PyTorch compute
when the fixture's tiny BERT (bench/make_hf_fixture.py) is trained as a masked LM for a few steps
the way `bertlu pretrain` trains: AdamW (β 0.9/0.999, ε 1e-6, decoupled weight decay 0.01 on
every tensor), each gradient tensor's norm clipped to 1 on its own, the learning rate given per
step, no dropout, the loss the mean cross-entropy over the masked positions of a batch.

It records the fixed masked batches (single texts and pairs, padded), the loss at every step and,
after the last step, the masked-LM logits of a probe batch: tests/hf.rs trains bertlu's import
of the same checkpoint on the same batches and checks both, so gradients and the optimiser are
checked against the reference, not only the forward pass. Needs `pip install torch transformers`;
run once, from the repository root, after make_hf_fixture.py:
    python3 bench/make_training_fixture.py
"""
import json, os, random, sys
import torch
from transformers import BertForPreTraining

DIR = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf-tiny-bert"
PAD, CLS, SEP, MASK = 0, 101, 102, 103
WORDS = list(range(104, 144))
STEPS, BATCH = 12, 4

rng = random.Random(7)


def sequence():
    """[CLS] a [SEP] or, one time in three, a pair [CLS] a [SEP] b [SEP]."""
    seq = [CLS] + [rng.choice(WORDS) for _ in range(rng.randint(4, 18))] + [SEP]
    if rng.random() < 1 / 3:
        seq += [rng.choice(WORDS) for _ in range(rng.randint(3, 9))] + [SEP]
    return seq


def masked(seq):
    """15 % of the non-special positions (at least one), as BERT: 80 % [MASK], 10 % a random
    word, 10 % kept."""
    candidates = [i for i, t in enumerate(seq) if t not in (CLS, SEP)]
    positions = sorted(rng.sample(candidates, max(1, round(0.15 * len(candidates)))))
    inputs = list(seq)
    for p in positions:
        r = rng.random()
        if r < 0.8:
            inputs[p] = MASK
        elif r < 0.9:
            inputs[p] = rng.choice(WORDS)
    return {"input_ids": inputs, "positions": positions, "targets": [seq[p] for p in positions]}


def tensors(batch):
    """input ids, attention mask, token types (0 up to the first [SEP], 1 after), flat positions."""
    length = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), length), PAD, dtype=torch.long)
    attention = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    flat = []
    for b, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[b, :n] = torch.tensor(e["input_ids"])
        attention[b, :n] = 1
        first_sep = e["input_ids"].index(SEP)
        types[b, first_sep + 1 : n] = 1
        flat += [b * length + p for p in e["positions"]]
    return ids, attention, types, torch.tensor(flat)


def logits_at(model, batch):
    ids, attention, types, flat = tensors(batch)
    out = model(input_ids=ids, attention_mask=attention, token_type_ids=types).prediction_logits
    return out.reshape(-1, out.shape[-1])[flat]


batches = [[masked(sequence()) for _ in range(BATCH)] for _ in range(STEPS)]
probe = [masked(sequence()) for _ in range(BATCH)]
lrs = [5e-3 * min((s + 1) / 3, (STEPS - s) / (STEPS - 2)) for s in range(STEPS)]

model = BertForPreTraining.from_pretrained(DIR, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model.train()
params = list(model.parameters())
opt = torch.optim.AdamW(params, lr=lrs[0], betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
losses = []
for batch, lr in zip(batches, lrs):
    targets = torch.tensor([t for e in batch for t in e["targets"]])
    loss = torch.nn.functional.cross_entropy(logits_at(model, batch), targets)
    opt.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                norm = p.grad.norm()
                if norm > 1.0:
                    p.grad.mul_(1.0 / norm)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    losses.append(round(loss.item(), 6))
with torch.no_grad():
    probe_logits = [[round(x, 6) for x in row] for row in logits_at(model, probe).tolist()]

out = {
    "transformers": __import__("transformers").__version__,
    "torch": torch.__version__,
    "batches": batches,
    "lrs": lrs,
    "losses": losses,
    "probe": probe,
    "probe_logits": probe_logits,
}
with open(os.path.join(DIR, "training.json"), "w") as f:
    json.dump(out, f)
print(DIR, "losses", losses)
