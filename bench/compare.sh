#!/usr/bin/env bash
# Ballast side by side with the raw disk and peer servers, in one invocation, on one disk.
#
# Sections (BENCH_SECTIONS, default "nbd iscsi restart density"):
#   nbd      fio on a raw file (io_uring, O_DIRECT) vs ballastd, qemu-nbd (--cache=none
#            --aio=io_uring -e 16) and nbdkit (file cache=none) over NBD (fio ioengine=nbd).
#            Workloads: 4 KiB random write QD32, 4 KiB random read QD32, 4 KiB random write QD1
#            (mean and p99 latency), 1 MiB sequential write and read QD8. Writes send a FLUSH
#            (fsync) every 32 writes for every system, so durability is equal. Every target is
#            prefilled first, so reads hit data, not holes. For ballastd: CPU time and managed
#            bytes allocated per I/O, and Gen2 collections, from /proc and /metrics.
#            nbdkit's cache=none is not O_DIRECT (it writes through the page cache and evicts
#            afterwards), so its 1 MiB rows can exceed the raw O_DIRECT figure.
#   steady   ballastd alone, as after long use: a volume in its own pool 80% full (so the cleaner
#            runs), prefilled, a warm-up of random writes (BENCH_STEADY_WARMUP, 30 s), then
#            BENCH_STEADY_SECONDS (60) of 4 KiB random writes QD32 with a FLUSH every 32: IOPS,
#            cleaner bytes moved, CPU, Gen2 collections and bytes allocated per write.
#   iscsi    ballastd vs tgtd (--bsoflags direct, 4 KiB blocks, same prefilled file): iscsi-perf
#            4 KiB random reads QD32, qemu-img bench 4 KiB sequential writes QD32 (flush every 32).
#   restart  a volume written randomly in 4 KiB blocks, ballastd killed with SIGKILL, restarted:
#            time from exec to the first served read (checkpoint + tail replay).
#   density  1000 volumes in one pool, each attached once over NBD (handshake + one read);
#            attach time median/p99/max and ballastd's resident memory.
#
# Env: BENCH_DIR (default bench/out/compare: on the disk under test), BENCH_SECONDS (20 per
#      run, after a 5 s ramp), BENCH_SIZE_GIB (4), BENCH_RESTART_GIB (10), BENCH_RESTART_WRITE_GIB
#      (bytes of random writes before the kill; default the volume size), BENCH_VOLUMES (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BENCH_DIR:-$PWD/bench/out/compare}
seconds=${BENCH_SECONDS:-20}
steady_seconds=${BENCH_STEADY_SECONDS:-60}
steady_warmup=${BENCH_STEADY_WARMUP:-30}
size_gib=${BENCH_SIZE_GIB:-4}
restart_gib=${BENCH_RESTART_GIB:-10}
restart_write_gib=${BENCH_RESTART_WRITE_GIB:-$restart_gib}
volumes=${BENCH_VOLUMES:-1000}
sections=${BENCH_SECTIONS:-nbd steady iscsi restart density}
for t in fio qemu-nbd nbdkit tgtd tgtadm iscsi-perf qemu-img curl python3; do
  command -v "$t" >/dev/null || { echo "$t is required (see install-test-deps.sh)" >&2; exit 2; }
done

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build -c Release daemon/Ballast.Daemon -nologo -v quiet >/dev/null
ballastd=(dotnet daemon/Ballast.Daemon/bin/Release/net10.0/ballastd.dll)
attach=bench/tools/nbd_attach.py
iscsi_flag=()
if "${ballastd[@]}" --help | grep -q -- --iscsi-listen; then iscsi_flag=(--iscsi-listen "127.0.0.1:3262"); fi
nbd_port=10819 qemu_port=10820 nbdkit_port=10821 iscsi_port=3262 tgt_port=3263 steady_port=10822
. bench/lib.sh
refuse_ports_in_use $nbd_port $qemu_port $nbdkit_port $iscsi_port $tgt_port $steady_port
iqn=iqn.2026-11.io.ballast:bench

rm -rf "$dir"; mkdir -p "$dir"
# The log sweeps the whole pool before the cleaner reuses space, so each pool file grows to its
# full size: check the disk holds them beside the raw file rather than fail halfway (ENOSPC).
need_gib=1
if [[ " $sections " =~ " "(nbd|iscsi|restart)" " ]]; then need_gib=$((need_gib + size_gib * 3 + restart_gib * 2)); fi
if [[ " $sections " == *" steady "* ]]; then need_gib=$((need_gib + (size_gib * 5 + 3) / 4)); fi
free_gib=$(df --output=avail -B1G "$dir" | tail -1 | tr -d ' ')
if (( free_gib < need_gib )); then
  echo "these sections need about $need_gib GiB free under $dir; $free_gib GiB are (lower BENCH_SIZE_GIB or BENCH_RESTART_GIB)" >&2
  exit 2
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -z "${tgt_pid:-}" ] || kill -9 "$tgt_pid" 2>/dev/null || true  # tgtd ignores SIGTERM while it has targets
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

api() { curl -sf --unix-socket "${api_sock:-$dir/api.sock}" "http://ballastd$1" "${@:2}"; }
metric() { api /metrics | awk -v m="$1" '$1==m || index($1, m "{")==1 {s+=$2} END{printf "%.0f\n", s}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
start_ballastd() { # extra ballastd args...
  rm -f "$dir/api.sock"
  "${ballastd[@]}" --data-dir "$dir/ballast" --pool-size $((size_gib * 2 + restart_gib * 2))GiB --api-socket "$dir/api.sock" \
    --nbd-listen "127.0.0.1:$nbd_port" "${iscsi_flag[@]}" --log-level "${log_level:-warning}" "$@" >>"$dir/ballastd.log" 2>&1 &
  bpid=$!
  pids+=("$bpid")
}
wait_api() { # [log to show if it never answers]
  for _ in $(seq 300); do api /v1/status >/dev/null 2>&1 && return 0; sleep 0.1; done; cat "${1:-$dir/ballastd.log}" >&2; exit 1; }

# fio_run NAME ENGINE-ARGS... -- WORKLOAD-ARGS... ; prints "iops mean_us p99_us"
fio_run() {
  fio --name="$1" "${@:2}" --ramp_time=5 --runtime="$seconds" --time_based --output-format=json |
    python3 -c '
import json, sys
t = sys.stdin.read(); j = json.loads(t[t.index("{"):])["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
p = d["clat_ns"].get("percentile", {}).get("99.000000", 0)
print(round(d["iops"]), round(d["clat_ns"]["mean"] / 1000, 1), round(p / 1000, 1))'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -h "$dir" | awk 'NR==2{print $1}'), kernel $(uname -r)"
echo "run: $(date -u +%FT%TZ), ${size_gib} GiB targets, ${seconds} s per run after a 5 s ramp"

if [[ " $sections " == *" nbd "* || " $sections " == *" iscsi "* ]]; then
  echo "== prefill: raw file and ballastd volume, ${size_gib} GiB each, 1 MiB sequential writes"
  fio --name=prefill --filename="$dir/raw.dat" --size="${size_gib}G" --rw=write --bs=1M --ioengine=io_uring --direct=1 --iodepth=8 --output-format=terse >/dev/null
  start_ballastd --volume "bench:${size_gib}GiB"
  wait_api
  fio --name=prefill --ioengine=nbd --uri="nbd://127.0.0.1:$nbd_port/bench" --size="${size_gib}G" --rw=write --bs=1M --iodepth=8 --output-format=terse >/dev/null
fi

if [[ " $sections " == *" nbd "* ]]; then
  qemu-nbd -f raw --cache=none --aio=io_uring -e 16 -t -b 127.0.0.1 -p "$qemu_port" -x raw "$dir/raw.dat" &
  pids+=($!)
  nbdkit -f -i 127.0.0.1 -p "$nbdkit_port" file file="$dir/raw.dat" cache=none &
  pids+=($!)
  for p in $qemu_port $nbdkit_port; do
    for _ in $(seq 100); do python3 "$attach" 127.0.0.1 "$p" raw >/dev/null 2>&1 && break; sleep 0.1; done
  done
  raw=(--filename="$dir/raw.dat" --size="${size_gib}G" --ioengine=io_uring --direct=1)
  declare -A work=(
    [rw4k]="--rw=randwrite --bs=4k --iodepth=32 --fsync=32"
    [rr4k]="--rw=randread --bs=4k --iodepth=32"
    [qd1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=32"
    [sw1m]="--rw=write --bs=1M --iodepth=8 --fsync=32"
    [sr1m]="--rw=read --bs=1M --iodepth=8"
  )
  gen2_start=$(api /metrics | awk '$1=="ballast_gc_collections_total{generation=\"2\"}"{print $2}')
  printf '%-6s %10s %10s %10s %10s  %8s %9s  %9s %9s\n' workload raw ballastd qemu-nbd nbdkit "/raw" "/best-peer" "cpu-us/io" "alloc-B/io"
  for w in rw4k rr4k qd1 sw1m sr1m; do
    # shellcheck disable=SC2206
    args=(${work[$w]})
    read -r r_iops r_lat r_p99 <<<"$(fio_run "$w" "${raw[@]}" "${args[@]}")"
    ios0=$(( $(metric ballast_volume_writes_total) + $(metric ballast_volume_reads_total) ))
    alloc0=$(metric ballast_gc_allocated_bytes_total); cpu0=$(cpu_ticks "$bpid")
    read -r b_iops b_lat b_p99 <<<"$(fio_run "$w" --ioengine=nbd --uri="nbd://127.0.0.1:$nbd_port/bench" --size="${size_gib}G" "${args[@]}")"
    cpu1=$(cpu_ticks "$bpid"); alloc1=$(metric ballast_gc_allocated_bytes_total)
    ios1=$(( $(metric ballast_volume_writes_total) + $(metric ballast_volume_reads_total) ))
    read -r q_iops q_lat q_p99 <<<"$(fio_run "$w" --ioengine=nbd --uri="nbd://127.0.0.1:$qemu_port/raw" --size="${size_gib}G" "${args[@]}")"
    read -r k_iops k_lat k_p99 <<<"$(fio_run "$w" --ioengine=nbd --uri="nbd://127.0.0.1:$nbdkit_port/raw" --size="${size_gib}G" "${args[@]}")"
    ios=$(( ios1 - ios0 )); [ "$ios" -gt 0 ] || ios=1
    cpu_us=$(python3 -c "print(f'{($cpu1 - $cpu0) * 1e6 / $(getconf CLK_TCK) / $ios:.1f}')")
    alloc_b=$(python3 -c "print(f'{($alloc1 - $alloc0) / $ios:.1f}')")
    if [ "$w" = qd1 ]; then
      printf '%-6s %8sus %8sus %8sus %8sus  %+7.0fus %+8.0fus  %9s %9s\n' "qd1" "$r_lat" "$b_lat" "$q_lat" "$k_lat" \
        "$(python3 -c "print($b_lat - $r_lat)")" "$(python3 -c "print($b_lat - min($q_lat, $k_lat))")" "$cpu_us" "$alloc_b"
      printf '%-6s %8sus %8sus %8sus %8sus\n' "qd1p99" "$r_p99" "$b_p99" "$q_p99" "$k_p99"
    else
      unit=""; [[ $w == s* ]] && unit="MiB/s"
      printf '%-6s %10s %10s %10s %10s  %8s %9s  %9s %9s %s\n' "$w" "$r_iops" "$b_iops" "$q_iops" "$k_iops" \
        "$(python3 -c "print(f'{$b_iops / $r_iops:.2f}x')")" "$(python3 -c "print(f'{$b_iops / max($q_iops, $k_iops):.2f}x')")" "$cpu_us" "$alloc_b" \
        "${unit:+(IOPS of 1 MiB = MiB/s)}"
    fi
  done
  echo "note: nbdkit's cache=none goes through the page cache (not O_DIRECT): its 1 MiB rows are not like for like"
  gen2_end=$(api /metrics | awk '$1=="ballast_gc_collections_total{generation=\"2\"}"{print $2}')
  echo "ballastd Gen2 collections during the NBD section: $((gen2_end - gen2_start))"
fi

if [[ " $sections " == *" steady "* ]]; then
  # ballastd alone, its own pool 80% full with one volume: after the prefill and a warm-up of
  # random writes, the map is at its working size and the cleaner runs all the time.
  echo "== steady state: ${size_gib} GiB volume in a $((size_gib * 5 * 256)) MiB pool; ${steady_warmup} s warm-up, then ${steady_seconds} s of 4 KiB random write QD32 (fsync every 32)"
  api_sock=$dir/steady.sock
  "${ballastd[@]}" --data-dir "$dir/steady" --pool-size "$(( size_gib * 5 * 256 ))MiB" --api-socket "$api_sock" \
    --nbd-listen "127.0.0.1:$steady_port" --iscsi-listen off --log-level warning --volume "steady:${size_gib}GiB" >>"$dir/steady.log" 2>&1 &
  spid=$!
  pids+=("$spid")
  wait_api "$dir/steady.log"
  uri="nbd://127.0.0.1:$steady_port/steady"
  fio --name=prefill --ioengine=nbd --uri="$uri" --size="${size_gib}G" --rw=write --bs=1M --iodepth=8 --output-format=terse >/dev/null
  fio --name=warmup --ioengine=nbd --uri="$uri" --size="${size_gib}G" --rw=randwrite --bs=4k --iodepth=32 --fsync=32 \
    --runtime="$steady_warmup" --time_based --output-format=terse >/dev/null
  g0=$(metric 'ballast_gc_collections_total{generation="2"}'); alloc0=$(metric ballast_gc_allocated_bytes_total)
  ios0=$(metric ballast_volume_writes_total); moved0=$(metric ballast_cleaner_moved_bytes_total); cpu0=$(cpu_ticks "$spid")
  fio --name=steady --ioengine=nbd --uri="$uri" --size="${size_gib}G" --rw=randwrite --bs=4k --iodepth=32 --fsync=32 \
    --runtime="$steady_seconds" --time_based --output-format=terse >/dev/null
  g1=$(metric 'ballast_gc_collections_total{generation="2"}'); alloc1=$(metric ballast_gc_allocated_bytes_total)
  ios1=$(metric ballast_volume_writes_total); moved1=$(metric ballast_cleaner_moved_bytes_total); cpu1=$(cpu_ticks "$spid")
  ios=$(( ios1 - ios0 )); [ "$ios" -gt 0 ] || ios=1
  echo "steady: $(( ios / steady_seconds )) IOPS, cleaner moved $(( (moved1 - moved0) >> 20 )) MiB," \
    "CPU $(python3 -c "print(f'{($cpu1 - $cpu0) * 1e6 / $(getconf CLK_TCK) / $ios:.1f}')") us per write," \
    "Gen2 collections $((g1 - g0)), allocated $(python3 -c "print(f'{($alloc1 - $alloc0) / $ios:.1f}')") B per write"
  kill "$spid"; wait "$spid" 2>/dev/null || true
  rm -rf "$dir/steady"
  unset api_sock
fi

if [[ " $sections " == *" iscsi "* ]]; then
  if pgrep -x tgtd >/dev/null; then echo "a tgtd is already running (tgtadm would talk to it): stop it first" >&2; exit 2; fi
  tgtd -f --iscsi portal="127.0.0.1:$tgt_port" >"$dir/tgtd.log" 2>&1 &
  tgt_pid=$!
  sleep 1
  tgtadm --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.bench:tgt
  tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$dir/raw.dat" --bsoflags direct --blocksize 4096
  tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL
  b_url="iscsi://127.0.0.1:$iscsi_port/$iqn/0"; t_url="iscsi://127.0.0.1:$tgt_port/iqn.2026-11.bench:tgt/1"
  perf() { { timeout -s INT $((seconds + 5)) iscsi-perf -r -m 32 -b 1 "$1" 2>&1 || true; } | tr '\r' '\n' | sed -n 's/.*iops average \([0-9]*\).*/\1/p' | tail -1; }
  qbench() { # 4 KiB sequential writes QD32, a flush every 32; prints IOPS
    local count=$((seconds * 20000))
    qemu-img bench -w -c "$count" -d 32 -s 4096 -S 4096 -t none --flush-interval=32 -f raw "$1" 2>&1 |
      sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p' | python3 -c "import sys; print(round($count / float(sys.stdin.read())))"
  }
  b_rr=$(perf "$b_url"); t_rr=$(perf "$t_url")
  b_sw=$(qbench "$b_url"); t_sw=$(qbench "$t_url")
  printf '%-14s %10s %10s  %s\n' workload ballastd tgtd ratio
  printf '%-14s %10s %10s  %sx\n' iscsi-rr4k "$b_rr" "$t_rr" "$(python3 -c "print(f'{$b_rr / $t_rr:.2f}')")"
  printf '%-14s %10s %10s  %sx\n' iscsi-sw4k "$b_sw" "$t_sw" "$(python3 -c "print(f'{$b_sw / $t_sw:.2f}')")"
fi

if [[ " $sections " == *" restart "* ]]; then
  [ -n "${bpid:-}" ] || { start_ballastd; wait_api; }
  api /v1/volumes -X POST -H 'Content-Type: application/json' -d "{\"name\":\"big\",\"size\":$((restart_gib << 30))}" >/dev/null
  echo "== restart: ${restart_gib} GiB volume, ${restart_write_gib} GiB of 4 KiB random writes (QD32), then SIGKILL"
  fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:$nbd_port/big" --size="${restart_gib}G" --io_size="${restart_write_gib}G" \
    --rw=randwrite --bs=4k --iodepth=32 --output-format=terse >/dev/null
  live=$(api /v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["pool"]["live"] >> 20)')
  kill -9 "$bpid"; wait "$bpid" 2>/dev/null || true
  # At information level for the pool's recovery line (where the opening time went).
  log_level=information start_ballastd
  ms=$(python3 "$attach" --wait 127.0.0.1 "$nbd_port" big 120)
  echo "restart: serving reads ${ms} ms after exec (pool: ${live} MiB live)"
  grep -o "opened in .*" "$dir/ballastd.log" | tail -1 || true
fi

if [[ " $sections " == *" density "* ]]; then
  [ -n "${bpid:-}" ] || { start_ballastd; wait_api; }
  echo "== density: $volumes volumes of 1 GiB in one pool"
  rss0=$(awk '/VmRSS/{print $2}' "/proc/$bpid/status")
  t0=$(date +%s.%N)
  for i in $(seq "$volumes"); do
    api /v1/volumes -X POST -H 'Content-Type: application/json' -d "{\"name\":\"d$i\",\"size\":1073741824}" >/dev/null
  done
  t1=$(date +%s.%N)
  rss1=$(awk '/VmRSS/{print $2}' "/proc/$bpid/status")
  # shellcheck disable=SC2046
  python3 "$attach" 127.0.0.1 "$nbd_port" $(seq -f 'd%g' "$volumes") | python3 -c '
import sys, statistics
xs = sorted(float(l.split()[1]) for l in sys.stdin)
print(f"attach (connect + handshake + 4 KiB read), {len(xs)} volumes: median {statistics.median(xs):.2f} ms, p99 {xs[int(len(xs) * 0.99) - 1]:.2f} ms, max {xs[-1]:.2f} ms")'
  rss2=$(awk '/VmRSS/{print $2}' "/proc/$bpid/status")
  echo "created $volumes volumes in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; ballastd RSS: $((rss0 >> 10)) MiB before, $((rss1 >> 10)) MiB with $volumes idle volumes, $((rss2 >> 10)) MiB after attaching each once"
fi
