#!/usr/bin/env bash
# A/B of two builds on one fio workload over NBD, interleaved so the disk's drift hits both:
# each round starts ballastd from tree A, then from tree B (each built beforehand with
# `dotnet build -c Release daemon/Ballast.Daemon`), prefills the 4 GiB demo volume, runs fio and
# prints throughput, mean latency, ballastd CPU and allocated bytes per I/O and the pool's batch counters.
#
#   bench/tools/ab.sh /work/base /work/main                          # 4 KiB write QD1, 3 rounds
#   RW=randwrite BS=4k QD=32 bench/tools/ab.sh A B
#   RW=write BS=1M QD=8 JOBS=1 ROUNDS=3 SECONDS_PER_RUN=10 bench/tools/ab.sh A B
#   ENV_A="X=1" ENV_B="X=2" bench/tools/ab.sh . .                    # one build, two environments
set -euo pipefail
a=$(realpath "$1"); b=$(realpath "$2")
cd "$(dirname "$0")/../.."
dir=${BENCH_DIR:-$PWD/bench/out/ab}
port=${PORT:-10898}
. bench/lib.sh
refuse_ports_in_use "$port"
run() { # tree env
  rm -rf "$dir"; mkdir -p "$dir"
  local pid
  # shellcheck disable=SC2086 # ENV_A/ENV_B hold several assignments
  start_bench_ballastd "$1" "$dir" "$port" warning ${2:-AB=1}
  local uri="nbd://127.0.0.1:$port/bench"
  fio --name=prefill --ioengine=nbd --uri="$uri" --size=4G --rw=write --bs=1M --iodepth=8 --output-format=terse >/dev/null
  local c0 c1 m g0 g1 after
  g0=$(curl -s --unix-socket "$dir/api.sock" http://b/metrics | awk '$1=="ballast_gc_allocated_bytes_total"{print $2}')
  c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  fio --name=run --ioengine=nbd --uri="$uri" --size=4G --rw="${RW:-randwrite}" --bs="${BS:-4k}" --iodepth="${QD:-1}" \
    --numjobs="${JOBS:-1}" --group_reporting --fsync=32 --runtime="${SECONDS_PER_RUN:-10}" --time_based \
    --output-format=json >"$dir/fio.json"
  c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  after=$(curl -s --unix-socket "$dir/api.sock" http://b/metrics)
  g1=$(awk '$1=="ballast_gc_allocated_bytes_total"{print $2}' <<<"$after")
  m=$(awk '/^ballast_pool_(batches|inline_batches|early_acks)_total/{printf "%s=%s ", $1, $2}' <<<"$after")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$dir/fio.json" "$c0" "$c1" "$(getconf CLK_TCK)" "$m" "$g0" "$g1" <<'PY'
import json, sys
s = open(sys.argv[1]).read(); j = json.loads(s[s.index("{"):])["jobs"][0]
w = j["write"] if j["write"]["io_bytes"] else j["read"]
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
alloc = (float(sys.argv[7]) - float(sys.argv[6])) / w['total_ios']
print(f"{w['iops']:9.0f} IOPS {w['bw'] / 1024:7.0f} MiB/s  mean {w['clat_ns']['mean'] / 1000:7.1f} us  "
      f"ballastd {cpu * 1e6 / w['total_ios']:6.1f} us CPU/IO {alloc:6.0f} B/IO  {sys.argv[5].replace('ballast_pool_', '')}")
PY
}
trap 'rm -rf "$dir"' EXIT
echo "workload: ${RW:-randwrite} bs=${BS:-4k} QD${QD:-1} x${JOBS:-1}, fsync every 32, ${SECONDS_PER_RUN:-10} s per run"
for r in $(seq "${ROUNDS:-3}"); do
  echo -n "A round $r: "; run "$a" "${ENV_A:-}"
  echo -n "B round $r: "; run "$b" "${ENV_B:-}"
done
