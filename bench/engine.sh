#!/usr/bin/env bash
# The engine on its own, side by side with the raw disk, in one run:
#   1. 4 KiB random writes into one engine volume (a pool file in $BENCH_DIR), 32 in flight,
#      a FLUSH after every 32 writes (bench/Ballast.Bench engine-randwrite);
#   2. fio on a raw file of the same size: io_uring, O_DIRECT, randwrite 4k, iodepth 32, fsync 32;
#   3. write amplification: a pool 80% full, overwritten 3 times in random 4 KiB blocks.
# Last line: engine_iops=N raw_iops=M ratio=R wa=W
#
# Env: BENCH_DIR (default bench/out/engine, on the disk under test), BENCH_SECONDS (30),
#      BENCH_SIZE_GIB (4: volume and raw file size), BENCH_WA_POOL_MIB (1024).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${BENCH_DIR:-$PWD/bench/out/engine}
seconds=${BENCH_SECONDS:-30}
size_gib=${BENCH_SIZE_GIB:-4}
wa_pool_mib=${BENCH_WA_POOL_MIB:-1024}
command -v fio >/dev/null || { echo "fio is required (apt-get install fio)" >&2; exit 2; }

mkdir -p "$dir"
trap 'rm -f "$dir/bench-pool.dat" "$dir/bench-wa.dat" "$dir/raw.dat"' EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build -c Release bench/Ballast.Bench -nologo -v quiet >/dev/null
bench=(dotnet bench/Ballast.Bench/bin/Release/net10.0/Ballast.Bench.dll)

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -h "$dir" | awk 'NR==2{print $1 " (" $2 ")"}'), kernel $(uname -r)"
echo "== engine: 4 KiB random write, QD32, FLUSH every 32 writes, ${size_gib} GiB volume, ${seconds} s"
engine_out=$("${bench[@]}" engine-randwrite --dir "$dir" --volume-gib "$size_gib" --pool-gib $((size_gib * 2)) --seconds "$seconds")
echo "$engine_out" | grep -v '^engine_iops='
engine_iops=$(echo "$engine_out" | sed -n 's/^engine_iops=//p')
rm -f "$dir/bench-pool.dat"

echo "== raw file: fio io_uring direct randwrite 4k iodepth 32 fsync 32, ${size_gib} GiB, ${seconds} s"
fio_json=$(fio --name=raw --filename="$dir/raw.dat" --size="${size_gib}G" --ioengine=io_uring --direct=1 \
  --rw=randwrite --bs=4k --iodepth=32 --fsync=32 --ramp_time=5 --runtime="$seconds" --time_based \
  --output-format=json)
raw_iops=$(echo "$fio_json" | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print(round(j["iops"])); print("fio: %.0f IOPS, latency mean %.0f us p99 %.0f us" % (j["iops"], j["clat_ns"]["mean"]/1000, j["clat_ns"]["percentile"]["99.000000"]/1000), file=sys.stderr)')
rm -f "$dir/raw.dat"

echo "== write amplification: ${wa_pool_mib} MiB pool, 80% full, overwritten 3x in random 4 KiB blocks"
wa_out=$("${bench[@]}" engine-wa --dir "$dir" --pool-mib "$wa_pool_mib" --fill 0.8 --overwrites 3 2>/dev/null)
echo "$wa_out" | grep -v '^wa='
wa=$(echo "$wa_out" | sed -n 's/^wa=//p')

ratio=$(python3 -c "print(f'{$engine_iops / $raw_iops:.2f}')")
echo "engine_iops=$engine_iops raw_iops=$raw_iops ratio=$ratio wa=$wa"
