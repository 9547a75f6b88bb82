#!/bin/bash
# Streamed experts against the file mapping (README, "Models larger than memory"): a stack (M) streamed or mapped
# under a memory cgroup v1 smaller than it, each run in a fresh cgroup.
#   warm: `dsv4 bench --json` (decode, prefill; the expert cache's figures)
#   cold: `dsv4 run` right after dropping the page cache (and, with SPEC=1, `run --speculative`)
# Configurations: --mmap (6 GB cgroup), --expert-cache-gb 1.5 (6 GB), --expert-cache-gb 3 (7 GB);
# a stack whose resident part is larger needs larger cgroups: LIMIT_MMAP, LIMIT_E15, LIMIT_E3 (bytes);
# CONFIGS picks some of them (default "mmap e15 e3"). READ_BPS caps the disk's read rate (bytes/s,
# a blkio v1 throttle on the device holding M, for the bench's own processes): a slower disk on a
# fast machine. The throttle credits a short idle span to the reads after it, so a decode's reads
# run above the cap while busy (its decode_disk_gbs) and its fraction of the I/O bound reads high;
# a process's probe may also read below the cap (seen in the first process after the cap is set).
# RUNS rounds (default 3), the configurations interleaved within each round. A warm --mmap bench
# starts after a page-cache drop too, so that only its own cgroup's cache is warm (pages cached by
# an earlier run's removed cgroup stay in memory uncharged and inflate it).
# Writes OUT/<config>-{warm,cold,spec}-<round>.{json,txt}, then OUT/summary.json and
# OUT/summary.md (medians over rounds). Needs root (cgroups, drop_caches).
#   usage: M=STACK [B=build/bin/dsv4] [OUT=stream-bench] [RUNS=3] [SPEC=0] [LIMIT_*=BYTES] [CONFIGS=...]
#          [READ_BPS=BYTES] bench/stream_bench.sh
# (STACK: e.g. `dsv4 make-model --preset flash --layers 8 --experts 256 --out STACK`, 34 GB.)
# About 4 minutes a round on an idle machine with that stack (SPEC=1: 6).
set -u
B=${B:-build/bin/dsv4}
M=${M:?set M to a checkpoint directory larger than the cgroup limits below}
RUNS=${RUNS:-3}
SPEC=${SPEC:-0}  # 1: also a cold `run --speculative` per configuration and round (~30 s each)
OUT=${OUT:-stream-bench}
LIMIT_MMAP=${LIMIT_MMAP:-6000000000}
LIMIT_E15=${LIMIT_E15:-6000000000}
LIMIT_E3=${LIMIT_E3:-7000000000}
CONFIGS=${CONFIGS:-mmap e15 e3}
# config NAME: sets LIMIT (the cgroup's bytes) and ARGS (dsv4's flags) of a configuration; fails
# for an unknown name.
config() {
  case $1 in
    mmap) LIMIT=$LIMIT_MMAP ARGS="--mmap" ;;
    e15) LIMIT=$LIMIT_E15 ARGS="--expert-cache-gb 1.5" ;;
    e3) LIMIT=$LIMIT_E3 ARGS="--expert-cache-gb 3" ;;
    *) return 1 ;;
  esac
}
for cfg in $CONFIGS; do
  config "$cfg" || { echo "stream_bench: unknown configuration $cfg (mmap, e15, e3)"; exit 1; }
done
READ_BPS=${READ_BPS:-}
BENCH_ARGS="--prompt 32 --gen 8 --context 32 --reps 2"
PROMPT='Tell me a story about a dragon'
mkdir -p "$OUT"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# The blkio cgroup that caps reads at READ_BPS (none without it).
BLK=""
if [ -n "$READ_BPS" ]; then
  BLK=/sys/fs/cgroup/blkio/dsv4-stream-bench-$$
  src=$(df --output=source "$M" | tail -n 1)
  dev=$(lsblk -no PKNAME "$src" 2>/dev/null | head -n 1)  # a partition's disk
  [ -n "$dev" ] || dev=$(basename "$src")
  mkdir -p $BLK && echo "$(cat /sys/block/$dev/dev) $READ_BPS" > $BLK/blkio.throttle.read_bps_device || exit 1
  trap 'rmdir $BLK' EXIT
fi

# in_cgroup LIMIT_BYTES STDOUT STDERR COMMAND...: runs COMMAND in a new memory cgroup (and BLK).
in_cgroup() {
  local limit=$1 out=$2 err=$3; shift 3
  local cg=/sys/fs/cgroup/memory/dsv4-stream-bench-$$ blk=""
  mkdir -p $cg && echo "$limit" > $cg/memory.limit_in_bytes
  [ -n "$BLK" ] && blk="echo \$\$ > $BLK/cgroup.procs;"
  /usr/bin/time -f "wall %e user %U sys %S" sh -c "echo \$\$ > $cg/cgroup.procs; $blk exec \"\$@\"" sh "$@" > "$out" 2> "$err"
  local rc=$?
  echo "rc=$rc maxmem $(cat $cg/memory.max_usage_in_bytes) failcnt $(cat $cg/memory.failcnt) $(tail -n 1 "$err")"
  rmdir $cg
}

# one CONFIG LIMIT ROUND ARGS...
one() {
  local cfg=$1 limit=$2 r=$3; shift 3
  echo "== $cfg round $r $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
  drop_caches
  in_cgroup "$limit" "$OUT/$cfg-cold-$r.txt" "$OUT/$cfg-cold-$r.err" $B run --model "$M" -p "$PROMPT" -n 12 --temp 0 "$@"
  if [ "$SPEC" = 1 ]; then
    drop_caches
    in_cgroup "$limit" "$OUT/$cfg-spec-$r.txt" "$OUT/$cfg-spec-$r.err" $B run --model "$M" -p "$PROMPT" -n 12 --temp 0 --speculative "$@"
  fi
  [ "$cfg" = mmap ] && drop_caches
  in_cgroup "$limit" "$OUT/$cfg-warm-$r.json" "$OUT/$cfg-warm-$r.err" $B bench --model "$M" $BENCH_ARGS --json "$@"
}

echo "stream_bench: $B on $M, $RUNS rounds, $(nproc) CPUs, reads capped at ${READ_BPS:-(no cap)} B/s, $(date -u)"
for r in $(seq 1 "$RUNS"); do
  for cfg in $CONFIGS; do
    config "$cfg"
    one "$cfg" "$LIMIT" "$r" $ARGS
  done
done

python3 - "$OUT" "$RUNS" <<'PY'
import json, re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def run_rates(path):  # (prefill, decode) tok/s from `run`'s summary line on stderr
    try:
        m = re.search(r'prompt \d+ tokens, ([\d.]+) tok/s \| generated \d+ tokens, ([\d.]+) tok/s', open(path).read())
        return (float(m.group(1)), float(m.group(2))) if m else None
    except OSError:
        return None
def med(v):
    v = [x for x in v if x is not None]
    return round(statistics.median(v), 4) if v else None
cache_keys = ['decode_hit_rate', 'decode_disk_bytes_per_token', 'disk_probe_gbs', 'decode_io_bound_tokens_per_s',
              'decode_io_bound_fraction', 'decode_step_s', 'decode_compute_s_per_token', 'decode_wait_s_per_token',
              'decode_wait_hash_s_per_token', 'decode_wait_score_s_per_token', 'decode_tile_s_per_token',
              'decode_disk_busy_fraction', 'decode_disk_gbs', 'decode_prediction_hit_rate',
              'decode_miss_bytes_per_token', 'decode_predicted_per_token', 'decode_cancelled_per_token',
              'decode_disk_mean_depth', 'decode_disk_idle_in_head_s_per_token']
summary = {}
for cfg in ['mmap', 'e15', 'e3']:
    rows = {'warm_decode': [], 'warm_decode_filled': [], 'warm_prefill': [], 'cold_prefill': [], 'cold_decode': [],
            'spec_decode': []}
    cache = {k: [] for k in cache_keys}
    for r in range(1, runs + 1):
        c, s = run_rates(f'{out}/{cfg}-cold-{r}.err'), run_rates(f'{out}/{cfg}-spec-{r}.err')
        rows['cold_prefill'].append(c[0] if c else None)
        rows['cold_decode'].append(c[1] if c else None)
        rows['spec_decode'].append(s[1] if s else None)
        try:
            j = json.load(open(f'{out}/{cfg}-warm-{r}.json'))
        except (OSError, ValueError):
            continue
        rows['warm_decode'].append(j['decode_tokens_per_s'])
        rows['warm_decode_filled'].append(j['decode_filled_tokens_per_s'])
        rows['warm_prefill'].append(j['prefill_tokens_per_s'])
        for k in cache_keys:
            cache[k].append(j.get('expert_cache', {}).get(k))
    summary[cfg] = {'runs': rows, 'median': {k: med(v) for k, v in rows.items()}}
    if cfg != 'mmap':
        summary[cfg]['expert_cache_median'] = {k: med(v) for k, v in cache.items()}
for cfg in ['e15', 'e3']:
    m, b = summary[cfg]['median'], summary['mmap']['median']
    summary[cfg]['x_mmap'] = {k: round(m[k] / b[k], 2) if m[k] and b[k] else None
                              for k in ['warm_decode', 'warm_prefill', 'cold_decode', 'cold_prefill', 'spec_decode']}
json.dump(summary, open(f'{out}/summary.json', 'w'), indent=1)
names = {'mmap': '`--mmap`', 'e15': '`--expert-cache-gb 1.5`', 'e3': '`--expert-cache-gb 3`'}
lines = ['| stack (medians) | warm decode tok/s | warm prefill tok/s | cold decode / prefill | cold speculative decode '
         '| hit rate, MB read / missed per token | I/O bound tok/s (disk GB/s) | of the I/O bound '
         '| step ms = compute + wait (hash / score) | tiling ms/token | reads in flight: share of the step, '
         'mean depth; ms of the head with none |',
         '|---|---|---|---|---|---|---|---|---|---|---|']
for cfg in ['mmap', 'e15', 'e3']:
    m = summary[cfg]['median']
    e = summary[cfg].get('expert_cache_median', {})
    x = summary[cfg].get('x_mmap', {})
    ms = lambda k: f"{e[k] * 1e3:.0f}" if e.get(k) is not None else '—'
    cell = lambda k: f"{m[k]:.2f}" + (f" ({x[k]}×)" if x.get(k) else '') if m[k] is not None else '—'
    frac = f"{e['decode_io_bound_fraction'] * 100:.0f} %" if e.get('decode_io_bound_fraction') is not None else '—'
    busy = (f"{e['decode_disk_busy_fraction'] * 100:.0f} %, {e['decode_disk_mean_depth']:.1f}; "
            f"{ms('decode_disk_idle_in_head_s_per_token')}"
            if e.get('decode_disk_busy_fraction') is not None and e.get('decode_disk_mean_depth') is not None else '—')
    step = (f"{ms('decode_step_s')} = {ms('decode_compute_s_per_token')} + {ms('decode_wait_s_per_token')} "
            f"({ms('decode_wait_hash_s_per_token')} / {ms('decode_wait_score_s_per_token')})") if e else '—'
    mb = lambda k: f"{e[k] / 1e6:.0f}" if e.get(k) is not None else '—'
    io = (f"{e['decode_hit_rate'] * 100:.0f} %, {mb('decode_disk_bytes_per_token')} / {mb('decode_miss_bytes_per_token')}"
          if e.get('decode_hit_rate') is not None else '—')
    bound = (f"{e['decode_io_bound_tokens_per_s']:.2f} ({e['disk_probe_gbs']:.2f})"
             if e.get('decode_io_bound_tokens_per_s') is not None and e.get('disk_probe_gbs') is not None else '—')
    lines.append(f"| {names[cfg]} | {cell('warm_decode')} | {cell('warm_prefill')} | {cell('cold_decode')} / "
                 f"{cell('cold_prefill')} | {cell('spec_decode')} | {io} | {bound} | {frac} | {step} | "
                 f"{ms('decode_tile_s_per_token')} | {busy} |")
open(f'{out}/summary.md', 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PY
echo "STREAM BENCH DONE $(date -u +%T)"
