"""ELECTRA (or masked-LM) pre-training in python `transformers` + PyTorch, for comparing learning
curves with `bertlu pretrain --tasks electra` (or `mlm`) on the same corpus, tokenizer, shapes and
schedule. `--tasks mlm`: `BertForMaskedLM` with BERT's 80/10/10 masking.

The generator (`ElectraForMaskedLM`) and the discriminator (`ElectraForPreTraining`) share the
token, position and segment embeddings, and the generator's output layer is tied to the token
embedding, as in the official code. Masking as bertlu's: 15 % of the non-special positions (at
most 20 a sequence), 85 % of them [MASK], 15 % unchanged; the generator's samples (from its
softmax, special tokens excluded) replace them; loss = generator MLM + λ · detection.

    python3 bench/electra_reference.py --corpus data/debtags-mini/corpus.txt.gz \
        --tokenizer data/debtags-mini/vocab-4000.json --preset tiny --epochs 10 --lr 1e-3

Prints, an epoch, the held-out generator accuracy and the discriminator's accuracy next to the
"all original" rate — the numbers `bertlu pretrain` prints for the same run.
"""

import argparse
import gzip
import math
import os
import random
import time

import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForMaskedLM, ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

PRESETS = {"tiny": (64, 2), "small": (128, 4)}  # d_model, layers (8 heads, d_ff 4 d_model)


def documents(path):
    """One document a line (the layout of the demo corpus; bertlu also reads blank-line-separated blocks)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def chunk(ids, max_len, cls, sep):
    """[CLS] … [SEP] sequences of at most max_len, as bertlu's chunk_document (a tail of under 8
    pieces after a first sequence is dropped)."""
    body = max_len - 2
    out = []
    for start in range(0, len(ids), body):
        piece = ids[start : start + body]
        if start > 0 and len(piece) < 8:
            break
        out.append([cls] + piece + [sep])
    return out


def mask(seq, specials, mask_id, rng, split, piece_ids, prob=0.15, cap=20):
    """split: (share to [MASK], share to [MASK] + share to a random piece)."""
    candidates = [i for i, t in enumerate(seq) if t not in specials]
    # rounded half away from zero, as Rust's f64::round in bertlu's num_predictions
    n = min(cap, len(candidates), max(1, int(len(candidates) * prob + 0.5))) if candidates else 0
    positions = sorted(rng.sample(candidates, n))
    masked = list(seq)
    for p in positions:
        r = rng.random()
        if r < split[0]:
            masked[p] = mask_id
        elif r < split[1]:
            masked[p] = rng.choice(piece_ids)
    return masked, positions


def batches(seqs, batch_size, specials, mask_id, rng, pad, split, piece_ids):
    for start in range(0, len(seqs), batch_size):
        group = seqs[start : start + batch_size]
        length = max(len(s) for s in group)
        ids = torch.full((len(group), length), pad, dtype=torch.long)
        masked = ids.clone()
        attention = torch.zeros((len(group), length), dtype=torch.long)
        pos = []
        for b, s in enumerate(group):
            m, p = mask(s, specials, mask_id, rng, split, piece_ids)
            ids[b, : len(s)] = torch.tensor(s)
            masked[b, : len(s)] = torch.tensor(m)
            attention[b, : len(s)] = 1
            pos += [b * length + q for q in p]
        yield ids, masked, attention, torch.tensor(pos, dtype=torch.long)


def electra_step(gen, disc, ids, masked, attention, pos, excluded, rtd_weight):
    b, l = ids.shape
    logits = gen(input_ids=masked, attention_mask=attention).logits.reshape(b * l, -1)[pos]
    targets = ids.reshape(-1)[pos]
    gen_loss = torch.nn.functional.cross_entropy(logits, targets)
    with torch.no_grad():
        mlm_loss = gen_loss.item() * len(targets)
        probs = torch.softmax(logits.float(), -1)
        probs[:, excluded] = 0
        samples = torch.multinomial(probs, 1).squeeze(1)
        corrupted = ids.clone().reshape(-1)
        corrupted[pos] = samples
        corrupted = corrupted.reshape(b, l)
        labels = (corrupted != ids).float()
    disc_logits = disc(input_ids=corrupted, attention_mask=attention).logits
    keep = attention.bool()
    rtd = torch.nn.functional.binary_cross_entropy_with_logits(disc_logits[keep], labels[keep])
    stats = {
        "mlm_correct": (logits.argmax(-1) == targets).sum().item(),
        "mlm_count": len(targets),
        "mlm_loss": mlm_loss,
        "disc_correct": ((disc_logits[keep] > 0).float() == labels[keep]).sum().item(),
        "disc_count": keep.sum().item(),
        "replaced": labels[keep].sum().item(),
        "rtd_loss": rtd.item() * keep.sum().item(),
    }
    return gen_loss + rtd_weight * rtd, stats


def mlm_step(model, ids, masked, attention, pos):
    b, l = ids.shape
    logits = model(input_ids=masked, attention_mask=attention).logits.reshape(b * l, -1)[pos]
    targets = ids.reshape(-1)[pos]
    loss = torch.nn.functional.cross_entropy(logits, targets)
    return loss, {"mlm_correct": (logits.argmax(-1) == targets).sum().item(), "mlm_count": len(targets), "mlm_loss": loss.item() * len(targets)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--tasks", default="electra", choices=["electra", "mlm"])
    ap.add_argument("--preset", default="tiny", choices=PRESETS)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--generator-size", type=float, default=0.25)
    ap.add_argument("--rtd-weight", type=float, default=50.0)
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--save", help="write the trained model here (the masked LM, or the discriminator) in HuggingFace layout")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    tok = Tokenizer.from_file(args.tokenizer)
    tok.no_padding()
    tok.no_truncation()
    vocab = tok.get_vocab_size()
    sid = {name: tok.token_to_id(name) for name in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]}
    specials = {sid["[PAD]"], sid["[CLS]"], sid["[SEP]"], sid["[MASK]"]}
    piece_ids = [t for t in range(vocab) if t not in specials]
    # held out as bertlu's is_held_out (valid_fraction 0.01): the second document, then one in 100
    train, valid = [], []
    for i, doc in enumerate(documents(args.corpus)):
        ids = tok.encode(doc, add_special_tokens=False).ids
        (valid if i % 100 == 1 else train).extend(chunk(ids, args.max_len, sid["[CLS]"], sid["[SEP]"]))
    print(f"{len(train)} training sequences, {len(valid)} held out, vocab {vocab}")

    d, layers = PRESETS[args.preset]
    common = dict(vocab_size=vocab, embedding_size=d, num_hidden_layers=layers, max_position_embeddings=args.max_len,
                  type_vocab_size=2, hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout, layer_norm_eps=1e-12,
                  initializer_range=args.init_std, pad_token_id=sid["[PAD]"], hidden_act="gelu")
    excluded = sorted(specials)
    if args.tasks == "electra":
        # the generator's width and heads as bertlu's generator_config
        g = max(1, round(d * args.generator_size))
        heads_g = max(1, round(8 * args.generator_size))
        while g % heads_g:
            heads_g -= 1
        disc = ElectraForPreTraining(ElectraConfig(hidden_size=d, num_attention_heads=8, intermediate_size=4 * d, **common))
        gen = ElectraForMaskedLM(ElectraConfig(hidden_size=g, num_attention_heads=heads_g, intermediate_size=4 * g, **common))
        gen.electra.embeddings = disc.electra.embeddings
        gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
        models = [gen, disc]
        split = (0.85, 0.85)
        run = lambda ids, masked, attention, pos: electra_step(gen, disc, ids, masked, attention, pos, excluded, args.rtd_weight)
    else:
        bert = BertForMaskedLM(BertConfig(hidden_size=d, num_attention_heads=8, intermediate_size=4 * d,
                                          **{k: v for k, v in common.items() if k != "embedding_size"}))
        models = [bert]
        split = (0.8, 0.9)
        run = lambda ids, masked, attention, pos: mlm_step(bert, ids, masked, attention, pos)
    params = list({id(p): p for m in models for p in m.parameters()}.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warmup if s < warmup else max(0.0, (total - s) / (total - warmup)))
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        for m in models:
            m.train()
        rng.shuffle(train)
        seen = {}
        for ids, masked, attention, pos in batches(train, args.batch_size, specials, sid["[MASK]"], rng, sid["[PAD]"], split, piece_ids):
            loss, s = run(ids, masked, attention, pos)
            for k, v in s.items():
                seen[k] = seen.get(k, 0) + v
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
        for m in models:
            m.eval()
        tot = {}
        vrng = random.Random(args.seed + 1)
        with torch.no_grad():
            for ids, masked, attention, pos in batches(valid, args.batch_size, specials, sid["[MASK]"], vrng, sid["[PAD]"], split, piece_ids):
                _, s = run(ids, masked, attention, pos)
                for k, v in s.items():
                    tot[k] = tot.get(k, 0) + v
        line = (f"epoch {epoch}: step {epoch * steps_per_epoch} | masked-token train loss {seen['mlm_loss'] / seen['mlm_count']:.4f}"
                f" acc {seen['mlm_correct'] / seen['mlm_count']:.4f}, valid loss {tot['mlm_loss'] / tot['mlm_count']:.4f}"
                f" acc {tot['mlm_correct'] / tot['mlm_count']:.4f}")
        if "disc_count" in tot:
            rtd = lambda t: (f"loss {t['rtd_loss'] / t['disc_count']:.4f} acc {t['disc_correct'] / t['disc_count']:.4f}"
                             f" (all-original {1 - t['replaced'] / t['disc_count']:.4f})")
            line += f" | rtd train {rtd(seen)}, valid {rtd(tot)}"
        print(line + f" | {time.time() - t0:.0f}s", flush=True)
    if args.save:
        models[-1].save_pretrained(args.save)
        tok.save(os.path.join(args.save, "tokenizer.json"))


if __name__ == "__main__":
    main()
