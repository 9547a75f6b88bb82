#!/usr/bin/env python3
"""A model of V4-Pro under dsv4's expert parallelism on K machines (docs/distributed.md).

  bench/ep_model.py [--bw-net GB/s] [--lat-us L] [--bw-mem GB/s] [--tflops C]

Decode (one sequence): rank 0 reads every non-expert weight per token; per MoE layer the busiest
machine reads its experts, and rank 0 pays two one-way latencies plus its traffic over the link.
Prefill (long prompts, compute-bound): rank 0 computes every non-expert product, the experts'
FLOPs are shared by K machines, the link carries the traffic. Inputs are stated assumptions; the
traffic per token is the formula the benchmark measures (bench/ep_bench.sh)."""
import argparse
import random

p = argparse.ArgumentParser()
p.add_argument("--bw-net", type=float, default=12.5, help="link bandwidth per machine, GB/s (100 GbE)")
p.add_argument("--lat-us", type=float, default=20.0, help="one-way message latency, µs")
p.add_argument("--bw-mem", type=float, default=300.0, help="memory bandwidth per machine, GB/s")
p.add_argument("--tflops", type=float, default=10.0, help="dense BF16 throughput per machine, TFLOP/s")
a = p.parse_args()

D, I, E, K_ACT, LAYERS = 7168, 3072, 384, 6, 61          # spec §1.2 (MTP block not counted)
CKPT = 805.3 * 2**30                                     # bytes (spec: 805.3 GiB = 865 GB)
EXPERT = 3 * (I * D // 2 + I * D // 32)                  # FP4 bytes + UE8M0 scale per 32: 35.1 MB
EXPERTS_ALL = EXPERT * E * (LAYERS + 1)                  # + the MTP block's experts
NON_EXPERT = CKPT - EXPERTS_ALL                          # every machine holds these
READ_NE = NON_EXPERT - 129280 * D * 2                    # per decoded token (one embedding row)
FLOP_NE = 2 * READ_NE                                    # ~1 byte (FP8) per parameter
FLOP_EXPERTS = LAYERS * K_ACT * 3 * 2 * I * D
PAIR_OUT, PAIR_BACK = 4 * D + 4, 4 * D                   # bytes per remote (token, expert) pair


def busiest(K, trials=20000):
    """Expected experts on the busiest machine when 6 of E experts (spread evenly) are picked."""
    rng = random.Random(1)
    tot = 0
    for _ in range(trials):
        c = [0] * K
        for e in rng.sample(range(E), K_ACT):
            c[e * K // E] += 1
        tot += max(c)
    return tot / trials


print(f"V4-Pro: {CKPT / 1e9:.0f} GB = {EXPERTS_ALL / 1e9:.0f} GB routed experts ({EXPERT / 1e6:.1f} MB each) "
      f"+ {NON_EXPERT / 1e9:.1f} GB the rest")
print(f"assumed: link {a.bw_net} GB/s, latency {a.lat_us} µs, memory {a.bw_mem} GB/s, {a.tflops} TFLOP/s per machine")
print(f"{'K':>3} {'GB/machine':>10} {'KB/tok/layer':>12} {'decode tok/s':>12} {'(net share)':>11} "
      f"{'prefill tok/s':>13} {'(link cap)':>10}")
for K in (1, 2, 4, 8, 16, 32, 64):
    mem = NON_EXPERT + EXPERTS_ALL / K
    remote = K_ACT * (K - 1) / K
    out = remote * PAIR_OUT + 24 * min(K - 1, K_ACT)
    t_ne = READ_NE / (a.bw_mem * 1e9)
    t_exp = LAYERS * busiest(K) * EXPERT / (a.bw_mem * 1e9)
    t_net = LAYERS * (2 * a.lat_us * 1e-6 + out / (a.bw_net * 1e9)) if K > 1 else 0
    dec = 1 / (t_ne + t_exp + t_net)
    pre = a.tflops * 1e12 / (FLOP_NE + FLOP_EXPERTS / K)
    cap = a.bw_net * 1e9 / (LAYERS * out) if K > 1 else float("inf")
    print(f"{K:3d} {mem / 1e9:10.0f} {out / 1e3:12.1f} {dec:12.2f} {t_net * dec:10.0%} {min(pre, cap):13.0f} "
          f"{cap:10.0f}")
