#!/usr/bin/env python3
"""bertlu vs PyTorch on the reference masked-LM training step, measured side by side.

Runs `bertlu bench --setting reference --case pretrain` and `pytorch_reference.py` in turns
(ROUNDS rounds, each a fresh process of each), pools the timed steps of each implementation and
prints medians, ranges, tokens/s, peak memory and the ratio bertlu / PyTorch (> 1: bertlu faster).

    cargo build --release && pip install torch
    python3 bench/side_by_side.py --rounds 3 --iters 20 [--bertlu target/release/bertlu] [--python python3]
"""
import argparse
import json
import os
import statistics
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bertlu", default=os.path.join(HERE, "..", "target", "release", "bertlu"))
    ap.add_argument("--python", default="python3")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    secs = {"bertlu": [], "pytorch": []}
    peak = {"bertlu": 0.0, "pytorch": 0.0}
    tokens = 32 * 128
    for r in range(a.rounds):
        b = run([a.bertlu, "bench", "--setting", "reference", "--case", "pretrain", "--iters", str(a.iters), "--warmup", str(a.warmup), "--json"])[0]
        p = run([a.python, os.path.join(HERE, "pytorch_reference.py"), "--threads", str(a.threads), "--iters", str(a.iters), "--warmup", str(a.warmup)])
        for name, m in (("bertlu", b), ("pytorch", p)):
            secs[name] += m["seconds"]
            peak[name] = max(peak[name], m.get("peak_rss_mib") or 0.0)
        print(f"round {r + 1}: bertlu median {statistics.median(b['seconds']) * 1e3:.0f} ms, pytorch median {statistics.median(p['seconds']) * 1e3:.0f} ms", flush=True)
    print("\n| implementation | median ms/step | min–max ms | tokens/s | peak RSS MiB |\n|---|---|---|---|---|")
    for name in ("bertlu", "pytorch"):
        s = secs[name]
        med = statistics.median(s)
        print(f"| {name} | {med * 1e3:.0f} | {min(s) * 1e3:.0f}–{max(s) * 1e3:.0f} | {tokens / med:.0f} | {peak[name]:.0f} |")
    ratio = statistics.median(secs["pytorch"]) / statistics.median(secs["bertlu"])
    print(f"\nbertlu / PyTorch speed (tokens/s): {ratio:.2f}x  ({a.rounds} rounds x {a.iters} steps each, {a.threads} threads)")


if __name__ == "__main__":
    main()
