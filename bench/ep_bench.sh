#!/usr/bin/env bash
# Expert parallelism benchmark (a benchmark, not a test; docs/distributed.md): the same
# real-width Flash stack run by one process and by mpirun -np 2 --expert-parallel, with and
# without waves. Prints, per configuration: prefill / decode tok/s, resident memory per rank,
# bytes per token per MoE layer, rank 0's MoE time (own experts vs waiting), the other rank's
# compute and idle time.
#
#   bench/ep_bench.sh [BUILD_DIR] [MODEL_DIR]     (MODEL_DIR is created if missing: ~4.3 GB)
#
# On this 2-core machine np=2 means one core per rank (--threads 1); np=1 runs with 1 and 2
# threads for comparison. Ranks talk through shared memory, so this measures the mechanism
# (traffic, waiting, memory split), not a network.
set -euo pipefail
build="${1:-build}"
model="${2:-/tmp/dsv4-ep-bench-flash4x32}"
dsv4="$build/bin/dsv4"
reps="${EP_BENCH_REPS:-3}"
[[ -f "$model/config.json" ]] || "$dsv4" make-model --preset flash --layers 4 --experts 32 --no-tokenizer --out "$model"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe --mca btl self,vader --mca oob_tcp_if_include lo --mca mpi_yield_when_idle 1)
args=(bench --model "$model" --prompt "${EP_BENCH_PROMPT:-64}" --gen "${EP_BENCH_GEN:-8}" --reps "$reps" --mmap --json)
out="$(mktemp -d)"
"$dsv4" "${args[@]}" --threads 2 > "$out/np1-t2.json"
"$dsv4" "${args[@]}" --threads 1 > "$out/np1-t1.json"
"${mpi[@]}" -np 2 "$dsv4" "${args[@]}" --threads 1 --expert-parallel --ep-waves 1 > "$out/np2-w1.json"
"${mpi[@]}" -np 2 "$dsv4" "${args[@]}" --threads 1 --expert-parallel --ep-waves 4 > "$out/np2-w4.json"
# Waves against a link slow enough that transfers take about as long as the experts' compute
# (DSV4_EP_SIM_LINK, src/distributed/sim_link.h): shared memory alone leaves nothing to hide.
link="${EP_BENCH_SIM_LINK:-0.003,50}"
DSV4_EP_SIM_LINK="$link" "${mpi[@]}" -np 2 "$dsv4" "${args[@]}" --threads 1 --expert-parallel --ep-waves 1 > "$out/sim-w1.json"
DSV4_EP_SIM_LINK="$link" "${mpi[@]}" -np 2 "$dsv4" "${args[@]}" --threads 1 --expert-parallel --ep-waves 4 > "$out/sim-w4.json"
python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
print(f"{'config':10} {'prefill tok/s':>13} {'decode tok/s':>12} {'rss r0 GB':>9} {'rss r1 GB':>9} "
      f"{'B/tok/layer out':>15} {'in':>8} {'r0 own s':>8} {'r0 wait s':>9} {'r1 comp s':>9} {'r1 idle s':>9} {'r1 span s':>9}")
for name in ("np1-t2", "np1-t1", "np2-w1", "np2-w4", "sim-w1", "sim-w4"):
    j = json.load(open(os.path.join(d, name + ".json")))
    e = j.get("expert_parallel", {})
    print(f"{name:10} {j['prefill_tokens_per_s']:13.1f} {j['decode_tokens_per_s']:12.2f} {j['rss_gb']:9.2f} "
          f"{e.get('max_other_rank_rss_gb', 0):9.2f} {e.get('bytes_sent_per_token_layer', 0):15.0f} "
          f"{e.get('bytes_received_per_token_layer', 0):8.0f} {e.get('rank0_local_experts_s', 0):8.3f} "
          f"{e.get('rank0_wait_s', 0):9.3f} {e.get('remote_compute_s', 0):9.3f} {e.get('remote_idle_in_call_s', 0):9.3f} "
          f"{e.get('remote_span_s', 0):9.3f}")
PY
echo "(raw JSON in $out)"
