#!/usr/bin/env bash
# Sequential reads of a volume written at random: every 4 KiB block of a 4 GiB volume written once
# in random order (fio randwrite, QD32), then 1 MiB and 64 KiB sequential reads at QD8 over NBD.
# Each block lies elsewhere on the device, so a 1 MiB read is 256 device reads. Trees are run one
# after the other, ROUNDS times (each built with `dotnet build -c Release daemon/Ballast.Daemon`);
# the raw file's sequential and 4 KiB random read rates are measured in each round for scale.
# With DEFRAG=1 each tree then defragments the volume (`volume defragment`, timed) and reads again.
#
#   bench/tools/scattered-read.sh /work/base /work/main
set -euo pipefail
trees=(); for t in "$@"; do trees+=("$(realpath "$t")"); done
cd "$(dirname "$0")/../.."
dir=${BENCH_DIR:-$PWD/bench/out/scattered}
port=${PORT:-10899}
seconds=${SECONDS_PER_RUN:-8}
. bench/lib.sh
refuse_ports_in_use "$port"
mkdir -p "$dir"
raw() { # rw bs qd
  fio --name=raw --filename="$dir/raw.img" --size=4G --rw="$1" --bs="$2" --iodepth="$3" --ioengine=io_uring --direct=1 \
    --runtime="$seconds" --time_based --output-format=terse | awk -F';' '$1=="3"{printf "%.0f MiB/s", $7/1024}'
}
[ -f "$dir/raw.img" ] || fio --name=fill --filename="$dir/raw.img" --size=4G --rw=write --bs=1M --iodepth=8 --ioengine=io_uring --direct=1 --output-format=terse >/dev/null
for round in $(seq "${ROUNDS:-1}"); do
  echo "round $round raw file: seq 1M QD8 $(raw read 1M 8), rand 4k QD32 $(raw randread 4k 32)"
  for tree in "${trees[@]}"; do
    rm -rf "$dir/b"; mkdir -p "$dir/b"
    start_bench_ballastd "$tree" "$dir" "$port" warning
    uri="nbd://127.0.0.1:$port/bench"
    fio --name=scatter --ioengine=nbd --uri="$uri" --size=4G --rw=randwrite --bs=4k --iodepth=32 --randseed=7 --output-format=terse >/dev/null
    reads() {
      line="  $(basename "$tree")$1:"
      for bs in 1M 64k; do
        c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
        r=$(fio --name=read --ioengine=nbd --uri="$uri" --size=4G --rw=read --bs="$bs" --iodepth=8 --runtime="$seconds" --time_based \
          --output-format=terse | awk -F';' '$1=="3"{printf "%.0f MiB/s %d IOPS", $7/1024, $8}')
        c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
        line+="  seq $bs QD8 $r ($(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )) ms CPU)"
      done
      echo "$line"
    }
    reads ""
    if [ "${DEFRAG:-0}" = 1 ]; then
      c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
      d=$(curl -sf --unix-socket "$dir/api.sock" -X POST -H 'Content-Type: application/json' -d '{}' http://b/v1/volumes/bench/defragment)
      c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
      echo "  defragment: $d ($(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )) ms CPU)"
      reads " after defragment"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
