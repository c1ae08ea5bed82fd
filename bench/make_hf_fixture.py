#!/usr/bin/env python3
"""Writes tests/fixtures/hf-tiny-bert/: a tiny random BERT in the HuggingFace layout (config.json,
model.safetensors with the masked-LM and next-sentence heads, tokenizer.json, vocab.txt,
tokenizer_config.json) and expected.json, what python `transformers` computes for a few fixed
inputs: token ids, segment ids, the last hidden states and the masked-LM logits. tests/hf.rs
checks that `bertlu import-hf` reproduces them. Needs `pip install torch transformers`; run once,
from the repository root:
    python3 bench/make_hf_fixture.py                       # tests/fixtures/hf-tiny-bert
    python3 bench/make_hf_fixture.py tests/fixtures/hf-tiny-bert-tanh --hidden-act gelu_new --layer-norm-eps 1e-5
The second also records the pooler's output (dense + tanh on the [CLS] state) as "pooled" and the
next-sentence logits (index 0: B follows A) as "nsp_logits".
"""
import argparse, json, os
import torch
from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("out", nargs="?", default="tests/fixtures/hf-tiny-bert")
ap.add_argument("--hidden-act", default="gelu")
ap.add_argument("--layer-norm-eps", type=float, default=1e-12)
args = ap.parse_args()
out = args.out
with_pooled = args.hidden_act != "gelu" or args.layer_norm_eps != 1e-12
os.makedirs(out, exist_ok=True)
words = ["the", "a", "for", "and", "of", "with", "network", "tool", "python", "sound", "files", "library",
         "graphics", "data", "fast", "small", "simple", "package", "provides", "support", "##s", "##ing", "##ed",
         ".", ",", "!", "?", "网", "络", "工", "具", "数", "据", "库", "声", "音", "简", "单", "的", "是"]
vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
with open(os.path.join(out, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")
tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
tok.save_pretrained(out)
assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 100, 101, 102, 103]

torch.manual_seed(0)
cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act=args.hidden_act,
                 layer_norm_eps=args.layer_norm_eps, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
model = BertForPreTraining(cfg)
# random LayerNorm and bias values too, so a mis-mapped one cannot pass by being 1 or 0
with torch.no_grad():
    for name, p in model.named_parameters():
        if "LayerNorm" in name or name.endswith("bias"):
            p.add_(torch.randn_like(p) * 0.1)
model.eval()
model.save_pretrained(out, safe_serialization=True)

inputs = [
    ["The network tool provides python support."],
    ["简单的网络工具是数据库"],
    ["A small sound library", "graphics files for python"],
    [" ".join(["the fast network tools"] * 40)],
]
cases = []
with torch.no_grad():
    for texts in inputs:
        enc = tok(*texts, truncation=True, max_length=64, return_tensors="pt")
        res = model(**enc, output_hidden_states=True)
        case = {
            "texts": texts,
            "ids": enc["input_ids"][0].tolist(),
            "segments": enc["token_type_ids"][0].tolist(),
            "hidden": [[round(x, 7) for x in row] for row in res.hidden_states[-1][0].tolist()],
            "mlm_logits": [[round(x, 6) for x in row] for row in res.prediction_logits[0].tolist()],
        }
        if with_pooled:
            case["pooled"] = [round(x, 7) for x in model.bert(**enc).pooler_output[0].tolist()]
            case["nsp_logits"] = [round(x, 6) for x in res.seq_relationship_logits[0].tolist()]
        cases.append(case)
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({"transformers": __import__("transformers").__version__, "torch": torch.__version__, "cases": cases}, f)
print(out, [len(c["ids"]) for c in cases])
