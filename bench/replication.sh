#!/usr/bin/env bash
# Synchronous replication cost, in one run on this machine: two ballastd nodes on loopback
# (each its own pool file in $BENCH_DIR), one volume with 1 copy and one with 2 copies, both
# served by node a over NBD; fio (ioengine=nbd) against each:
#   1. 4 KiB random write QD32, a FLUSH every 32 writes (goal: 2 copies >= 0.7x 1 copy);
#   2. 4 KiB random write QD1 mean and p99 latency (goal: 2 copies <= 1 copy + one round trip + 20 us);
#   3. the TCP round trip on loopback (python ping-pong, median);
#   4. resync: node b killed with SIGKILL, BENCH_OUTAGE (1G) of 4 KiB random writes while it is down, b restarted;
#      QD1 write latency on the primary while the resync runs (goal: <= 2x the latency of step 2),
#      then again once the replica is in sync.
# The QD32 runs also print CPU per write of fio, the primary and the replica, how busy the cores
# were, and the highest 2-copy IOPS (and ratio) that CPU cost allows on these shared cores.
# Last line: qd32_ratio=R qd1_1copy_us=A qd1_2copies_us=B rtt_us=T resync_qd1_us=C
#
# Env: BENCH_DIR (default bench/out/replication), BENCH_SECONDS (20), BENCH_SIZE_GIB (4),
#      BENCH_RESYNC_RATE (ballastd --resync-rate, default 64MiB), BENCH_OUTAGE (1G: long enough that the
#      resync outlasts the 13 s QD1 run at the default rate; the script says if it did not).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BENCH_DIR:-$PWD/bench/out/replication}
seconds=${BENCH_SECONDS:-20}
size_gib=${BENCH_SIZE_GIB:-4}
resync_rate=${BENCH_RESYNC_RATE:-64MiB}
outage=${BENCH_OUTAGE:-1G}
command -v fio >/dev/null || { echo "fio is required (apt-get install fio)" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is required (apt-get install curl)" >&2; exit 2; }

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build -c Release daemon/Ballast.Daemon -nologo -v quiet >/dev/null
dotnet build -c Release daemon/Ballast.Cli -nologo -v quiet >/dev/null
ballastd=(dotnet daemon/Ballast.Daemon/bin/Release/net10.0/ballastd.dll)
ctl=(dotnet daemon/Ballast.Cli/bin/Release/net10.0/ballastctl.dll --socket "$dir/a/api.sock")

rm -rf "$dir"
mkdir -p "$dir/a" "$dir/b"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

nodes=(--node a=127.0.0.1:17110 --node b=127.0.0.1:17111)
. bench/lib.sh
refuse_ports_in_use 17110 17111 10811 10812
start_node() { # name repl-port nbd-port
  "${ballastd[@]}" --data-dir "$dir/$1" --pool-size $((size_gib * 3))GiB --node-id "$1" --replication-listen "127.0.0.1:$2" \
    "${nodes[@]}" --nbd-listen "127.0.0.1:$3" --iscsi-listen off --api-socket "$dir/$1/api.sock" --resync-rate "$resync_rate" \
    --log-level warning >>"$dir/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$dir/$1/api.sock" ] && return 0; sleep 0.2; done
  echo "node $1 did not start:" >&2; cat "$dir/$1.log" >&2; exit 1
}
start_node a 17110 10811
start_node b 17111 10812
b_pid=${pids[1]}
"${ctl[@]}" volume create one --size "${size_gib}GiB" --replicas 1 >/dev/null
"${ctl[@]}" volume create two --size "${size_gib}GiB" --replicas 2 --min-replicas 1 >/dev/null

timer=()
fio_run() { # volume iodepth fsync-every seconds [size] -> "iops mean_us p99_us"
  "${timer[@]}" fio --name=w --ioengine=nbd --uri="nbd://127.0.0.1:10811/$1" --rw=randwrite --bs=4k --iodepth="$2" --fsync="$3" \
    --size="${5:-${size_gib}G}" --ramp_time=3 --runtime="$4" --time_based --output-format=json |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]["write"]; print(round(j["iops"]), round(j["clat_ns"]["mean"]/1000,1), round(j["clat_ns"]["percentile"]["99.000000"]/1000,1))'
}
metric() { curl -s --unix-socket "$dir/${2:-a}/api.sock" http://ballastd/metrics | awk -v m="$1" '$1==m{print $2}'; }
gen2() { metric 'ballast_gc_collections_total{generation="2"}' "$1"; }
# CPU per write of each process during one fio run (its ramp included): fio's from /usr/bin/time,
# the nodes' from process_cpu_seconds_total, the writes from the primary's counter.
cpu_run() { # volume iodepth fsync-every seconds -> "iops mean_us p99_us fio_us primary_us replica_us busy_pct"
  local w0 a0 b0 t0 out w1 a1 b1 t1 m="ballast_volume_writes_total{volume=\"$1\"}"
  w0=$(metric "$m"); a0=$(metric process_cpu_seconds_total a); b0=$(metric process_cpu_seconds_total b); t0=$(date +%s.%N)
  timer=(/usr/bin/time -f '%U %S' -o "$dir/fio.time")
  out=$(fio_run "$1" "$2" "$3" "$4")
  timer=()
  t1=$(date +%s.%N); w1=$(metric "$m"); a1=$(metric process_cpu_seconds_total a); b1=$(metric process_cpu_seconds_total b)
  echo "$out $(python3 -c "
u, s = map(float, open('$dir/fio.time').read().split()[-2:])
n, a, b = $w1 - $w0, $a1 - $a0, $b1 - $b0
print('%.1f %.1f %.1f %.0f' % ((u + s) / n * 1e6, a / n * 1e6, b / n * 1e6, 100 * (u + s + a + b) / (($t1 - $t0) * $(nproc))))")"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); ${size_gib} GiB volumes, ${seconds} s per run"
echo "== 4 KiB random write QD32, FLUSH every 32 writes (1 copy, 2 copies, then again)"
read -r one_a _ _ one_fa one_pa one_ra one_busy_a <<<"$(cpu_run one 32 32 "$seconds")"
alloc_a0=$(metric ballast_gc_allocated_bytes_total a); alloc_b0=$(metric ballast_gc_allocated_bytes_total b)
gen2_a0=$(gen2 a); gen2_b0=$(gen2 b)
read -r two_a _ _ two_fa two_pa two_ra two_busy_a <<<"$(cpu_run two 32 32 "$seconds")"
read -r two_b _ _ two_fb two_pb two_rb two_busy_b <<<"$(cpu_run two 32 32 "$seconds")"
alloc_a1=$(metric ballast_gc_allocated_bytes_total a); alloc_b1=$(metric ballast_gc_allocated_bytes_total b)
gen2_a1=$(gen2 a); gen2_b1=$(gen2 b)
read -r one_b _ _ one_fb one_pb one_rb one_busy_b <<<"$(cpu_run one 32 32 "$seconds")"
one_iops=$(( (one_a + one_b) / 2 )); two_iops=$(( (two_a + two_b) / 2 ))
echo "1 copy: $one_a, $one_b IOPS; 2 copies: $two_a, $two_b IOPS"
# All three processes share the same cores, so 2 copies cannot pass cores / (CPU per write, summed
# over the processes), however well they overlap: that figure over the 1-copy IOPS bounds the ratio.
python3 - <<EOF
one = [($one_fa + $one_fb) / 2, ($one_pa + $one_pb) / 2, ($one_ra + $one_rb) / 2]
two = [($two_fa + $two_fb) / 2, ($two_pa + $two_pb) / 2, ($two_ra + $two_rb) / 2]
print("CPU per write, fio / primary / replica: 1 copy %.1f / %.1f / %.1f us (sum %.1f); 2 copies %.1f / %.1f / %.1f us (sum %.1f)" % (*one, sum(one), *two, sum(two)))
cap = $(nproc) / sum(two) * 1e6
print("cores busy: 1 copy $one_busy_a%%, $one_busy_b%%; 2 copies $two_busy_a%%, $two_busy_b%%; with 2 copies the CPU allows at most %.0f IOPS, a ratio of %.2f" % (cap, cap / $one_iops))
EOF
# Ramp included in the bytes, not in the count: a slight overestimate per write.
two_writes=$(( (two_a + two_b) * seconds ))
echo "2 copies, garbage: primary $(( (alloc_a1 - alloc_a0) / two_writes )) B and replica $(( (alloc_b1 - alloc_b0) / two_writes )) B allocated per write; Gen2 collections: primary $(( gen2_a1 - gen2_a0 )), replica $(( gen2_b1 - gen2_b0 ))"

echo "== 4 KiB random write QD1 (no flush)"
read -r _ one_lat one_p99 <<<"$(fio_run one 1 0 "$seconds")"
read -r _ two_lat two_p99 <<<"$(fio_run two 1 0 "$seconds")"
echo "1 copy: mean $one_lat us, p99 $one_p99 us; 2 copies: mean $two_lat us, p99 $two_p99 us"

echo "== TCP round trip on loopback (64-byte ping-pong, median of 20000)"
rtt=$(python3 - <<'EOF'
import socket, threading, time, statistics
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def echo():
    c, _ = srv.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (d := c.recv(64)): c.sendall(d)
threading.Thread(target=echo, daemon=True).start()
s = socket.create_connection(srv.getsockname()); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
xs = []
for _ in range(20000):
    t = time.perf_counter_ns(); s.sendall(b"x" * 64); n = 0
    while n < 64: n += len(s.recv(64 - n))
    xs.append((time.perf_counter_ns() - t) / 1000)
print(round(statistics.median(xs), 1))
EOF
)
echo "round trip: $rtt us"

echo "== resync: node b killed, $outage of 4 KiB random writes to 'two', b restarted; QD1 writes while it resyncs"
kill -9 "$b_pid"; wait "$b_pid" 2>/dev/null || true
fio --name=fill --ioengine=nbd --uri=nbd://127.0.0.1:10811/two --rw=randwrite --bs=4k --iodepth=32 --io_size="$outage" \
  --size="${size_gib}G" --output-format=terse >/dev/null
before=$(metric ballast_replication_resync_bytes_total); before=${before:-0}
start_node b 17111 10812
read -r _ resync_lat resync_p99 <<<"$(fio_run two 1 0 10)"
after=$(metric ballast_replication_resync_bytes_total); after=${after:-0}
echo "during resync: mean $resync_lat us, p99 $resync_p99 us; resync moved $(( (${after%.*} - ${before%.*}) >> 20 )) MiB in that window"
if "${ctl[@]}" volume inspect two | grep -qE '^b +replica +resyncing'; then
  echo "the resync was still running when that run ended"
else
  echo "WARNING: the resync ended before that run did: part of the figure is after it (raise BENCH_OUTAGE)"
fi
# The same QD1 run once the replica is in sync again: tells resync traffic from the restarted replica.
for _ in $(seq 120); do "${ctl[@]}" volume inspect two | grep -qE '^b +replica +in-sync' && break; sleep 0.5; done
read -r _ synced_lat synced_p99 <<<"$(fio_run two 1 0 "$seconds")"
echo "after the resync: mean $synced_lat us, p99 $synced_p99 us"

ratio=$(python3 -c "print(f'{$two_iops / $one_iops:.2f}')")
echo "qd32_ratio=$ratio qd1_1copy_us=$one_lat qd1_2copies_us=$two_lat rtt_us=$rtt resync_qd1_us=$resync_lat"
