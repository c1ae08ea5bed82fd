#!/usr/bin/env python3
"""bertlu vs PyTorch on the reference masked-LM training step, measured side by side.

Runs `bertlu bench --setting reference --case pretrain` and `pytorch_reference.py` in turns
(ROUNDS rounds, each a fresh process of each), pools the timed steps of each implementation and
prints medians, ranges, tokens/s, GFLOP/s (the step's matrix products as bertlu counts them, the
same model for both), peak memory and the ratio bertlu / PyTorch (> 1: bertlu faster).
`--bertlu` may be given several times, as NAME=PATH, to measure builds before and after a change
in the same run (`--bench-args` adds arguments to every bertlu run, e.g. "--precision bf16";
`--python-args "--bf16"` runs PyTorch's step under bf16 autocast).

    cargo build --release && pip install torch
    python3 bench/side_by_side.py --rounds 3 --iters 20 [--bertlu before=/tmp/bertlu-before --bertlu after=target/release/bertlu] [--python python3]
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
    ap.add_argument("--bertlu", action="append", help="PATH or NAME=PATH; repeatable")
    ap.add_argument("--bench-args", default="", help="extra arguments for every bertlu run")
    ap.add_argument("--python", default="python3")
    ap.add_argument("--python-args", default="", help="extra arguments for the PyTorch run, e.g. --bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    builds = []
    for spec in a.bertlu or [os.path.join(HERE, "..", "target", "release", "bertlu")]:
        name, _, path = spec.rpartition("=")
        builds.append((f"bertlu {name}".strip(), path))
    names = [n for n, _ in builds] + ["pytorch"]
    secs = {n: [] for n in names}
    peak = {n: 0.0 for n in names}
    tokens = 32 * 128
    flops = 0.0
    for r in range(a.rounds):
        results = []
        for name, path in builds:
            cmd = [path, "bench", "--setting", "reference", "--case", "pretrain", "--iters", str(a.iters), "--warmup", str(a.warmup), "--json"]
            results.append((name, run(cmd + a.bench_args.split())[0]))
        results.append(("pytorch", run([a.python, os.path.join(HERE, "pytorch_reference.py"), "--threads", str(a.threads), "--iters", str(a.iters), "--warmup", str(a.warmup)] + a.python_args.split())))
        for name, m in results:
            secs[name] += m["seconds"]
            peak[name] = max(peak[name], m.get("peak_rss_mib") or 0.0)
            flops = flops or m.get("flops") or 0.0
        print(f"round {r + 1}: " + ", ".join(f"{n} median {statistics.median(m['seconds']) * 1e3:.0f} ms" for n, m in results), flush=True)
    print("\n| implementation | median ms/step | min–max ms | tokens/s | GFLOP/s | peak RSS MiB | speed vs PyTorch |\n|---|---|---|---|---|---|---|")
    torch_med = statistics.median(secs["pytorch"])
    for name in names:
        s = secs[name]
        med = statistics.median(s)
        rate = f"{flops / med / 1e9:.0f}" if flops else "–"
        print(f"| {name} | {med * 1e3:.0f} | {min(s) * 1e3:.0f}–{max(s) * 1e3:.0f} | {tokens / med:.0f} | {rate} | {peak[name]:.0f} | {torch_med / med:.2f}x |")
    print(f"\n({a.rounds} rounds x {a.iters} steps each, {a.threads} threads; speed = PyTorch's median ms / this median ms)")


if __name__ == "__main__":
    main()
