#!/usr/bin/env python3
"""The expert-parallel forward's model of scale, from vkmoe-bench's JSON.

  mpirun -np 2 vkmoe-bench --expert-parallel --json ... > ep.json
  tools/ep_model.py ep.json [--alpha-us A --beta-gbps B] [--ranks 8,64,256]

For each run with runs[].expert_parallel it predicts the layer's time at
more ranks, each with the same tokens a rank (weak scaling), as measured
compute plus an alpha-beta cost of the exchanges (README, "A model of
scale", states the assumptions):

  rows a rank sends     s(R) = T k (R - 1) / R
  bytes a rank sends    b(R) = s(R) (D io + 8 + 4 D)      rows out, f32 rows back
  exchange              x(R) = 3 alpha (R - 1) + 2 alpha ceil(log2 R) + b(R) / beta
  imbalance             i(R) = 1 + sqrt(2 ln R (1 - 1/R) / (T k))
  compute               c(R) = c_balanced i(R),  c_balanced = compute_ms / imbalance
  layer                 t(R) = c(R) + x(R)

alpha and beta default to the all-to-all figures the bench measured on its
own ranks; pass an interconnect's to predict it.
"""
import argparse
import json
import math
import sys

IO_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def predict(run, ranks, alpha_us, beta_gbps):
    ep, shape = run["expert_parallel"], run["shape"]
    t, k, d = ep["tokens_per_rank"], shape["topk"], shape["dim"]
    io = IO_BYTES[shape.get("io", "f32")]
    balanced = ep["compute_ms"] / max(ep["imbalance"], 1.0)
    rows = []
    for r in ranks:
        sent = t * k * (r - 1) / r
        bytes_sent = sent * (d * io + 8 + 4 * d)
        exchange = 1e-3 * alpha_us * (3 * (r - 1) + 2 * math.ceil(math.log2(r))) + \
            bytes_sent / (beta_gbps * 1e6)
        imbalance = 1 + math.sqrt(2 * math.log(r) * (1 - 1 / r) / (t * k))
        compute = balanced * imbalance
        layer = compute + exchange
        rows.append((r, compute, exchange, layer, r * t / (layer * 1e-3)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="?", default="-")
    parser.add_argument("--alpha-us", type=float)
    parser.add_argument("--beta-gbps", type=float)
    parser.add_argument("--ranks", default="8,64,256")
    a = parser.parse_args()
    text = sys.stdin.read() if a.json == "-" else open(a.json).read()
    ranks = [int(r) for r in a.ranks.split(",")]
    if any(r < 2 for r in ranks):
        parser.error("--ranks: 2 or more")
    runs = [r for r in json.loads(text)["runs"] if "expert_parallel" in r]
    if not runs:
        sys.exit("ep_model: no runs[].expert_parallel in the JSON (vkmoe-bench --expert-parallel)")
    for run in runs:
        ep = run["expert_parallel"]
        alpha = a.alpha_us if a.alpha_us is not None else ep["alltoall_alpha_us"]
        beta = a.beta_gbps if a.beta_gbps is not None else ep["alltoall_beta_gbps"]
        print(f"{ep['tokens_per_rank']} tokens a rank, measured on {ep['ranks']} ranks: "
              f"{ep['layer_ms']:.3f} ms ({ep['compute_ms']:.3f} computing, imbalance "
              f"{ep['imbalance']:.2f}); alpha {alpha:g} us, beta {beta:g} GB/s")
        print(f"{'ranks':>7} {'compute ms':>11} {'exchange ms':>12} {'layer ms':>9} {'tokens/s':>10}")
        for r, compute, exchange, layer, rate in predict(run, ranks, alpha, beta):
            print(f"{r:>7} {compute:>11.3f} {exchange:>12.3f} {layer:>9.3f} {rate:>10.1f}")


if __name__ == "__main__":
    main()
