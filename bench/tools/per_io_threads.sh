#!/usr/bin/env bash
# Per-thread CPU time and context switches per I/O in ballastd for one fio workload over NBD:
# which threads an I/O crosses and what each costs. Starts its own ballastd on a 4 GiB demo
# volume (pool in $BENCH_DIR), prefills 1 GiB, runs N I/Os, prints one line per thread group.
#
#   bench/tools/per_io_threads.sh                       # 4 KiB random write, QD1, 20000 I/Os
#   QD=32 N=100000 EXTRA=--fsync=32 bench/tools/per_io_threads.sh
#   QD=32 N=100000 RW=randread bench/tools/per_io_threads.sh
#   QD=8 N=4000 RW=write BS=1M bench/tools/per_io_threads.sh
#   bench/tools/per_io_threads.sh DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0   # env for ballastd
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${BENCH_DIR:-$PWD/bench/out/threads}
port=${PORT:-10899}
n=${N:-20000}
. bench/lib.sh
rm -rf "$dir"; mkdir -p "$dir"
dotnet build -c Release daemon/Ballast.Daemon -nologo -v quiet >/dev/null
trap 'kill ${pid:-} 2>/dev/null; wait ${pid:-} 2>/dev/null; rm -rf "$dir"' EXIT
start_bench_ballastd . "$dir" "$port" warning "$@"
uri="nbd://127.0.0.1:$port/bench"
fio --name=prefill --ioengine=nbd --uri="$uri" --size=1G --rw=write --bs=1M --iodepth=8 --output-format=terse >/dev/null
# tid|name|utime+stime ticks|voluntary|nonvoluntary (the name may hold spaces: parse after ")")
snap() { for t in /proc/$pid/task/*; do
  echo "$(basename "$t")|$(cat "$t/comm")|$(sed 's/.*) //' "$t/stat" | awk '{print $12+$13}')|$(awk '/^voluntary/{print $2}' "$t/status")|$(awk '/^nonvoluntary/{print $2}' "$t/status")"
done; }
snap >"$dir/s0"
fio --name=run --ioengine=nbd --uri="$uri" --size=1G --rw="${RW:-randwrite}" --bs="${BS:-4k}" --iodepth="${QD:-1}" \
  --number_ios="$n" ${EXTRA:-} --output-format=json >"$dir/fio.json"
snap >"$dir/s1"
python3 - "$dir" "$n" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d, n, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = open(f"{d}/fio.json").read(); j = json.loads(s[s.index("{"):])["jobs"][0]
w = j["write"] if j["write"]["io_bytes"] else j["read"]
print(f"fio: {w['iops']:.0f} IOPS, mean latency {w['clat_ns']['mean']/1000:.1f} us")
load = lambda f: {l.split("|")[0]: l.strip().split("|") for l in open(f)}
a, b = load(f"{d}/s0"), load(f"{d}/s1")
groups = {}
for tid, v in b.items():
    o = a.get(tid, [tid, v[1], 0, 0, 0])
    name = "pool-io*" if v[1].startswith("pool-io") else v[1]
    g = groups.setdefault(name, [0, 0, 0])
    for i in range(3):
        g[i] += int(v[2 + i]) - int(o[2 + i])
total = [0, 0, 0]
for name, g in sorted(groups.items(), key=lambda x: -x[1][0]):
    total = [x + y for x, y in zip(total, g)]
    if any(g):
        print(f"{name:18s} cpu {g[0] * 1e6 / hz / n:6.1f} us/io  switches {g[1] / n:5.2f} voluntary {g[2] / n:5.2f} involuntary per io")
print(f"{'ballastd total':18s} cpu {total[0] * 1e6 / hz / n:6.1f} us/io  switches {total[1] / n:5.2f} voluntary {total[2] / n:5.2f} involuntary per io")
PY
