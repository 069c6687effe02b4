#!/usr/bin/env bash
# 4 KiB sequential writes at queue depth 1 over iSCSI (qemu-img bench, no flushes) against
# ballastd built in tree $1 (`dotnet build -c Release daemon/Ballast.Daemon` there first):
# prints qemu-img's run time and the pool's inline-batch and early-acknowledgement counters.
#
#   bench/tools/iscsi-qd1.sh /work/base; bench/tools/iscsi-qd1.sh .      # interleave for an A/B
set -euo pipefail
tree=$(realpath "$1")
cd "$(dirname "$0")/../.."
dir=${BENCH_DIR:-$PWD/bench/out/iscsi-qd1}
count=${COUNT:-40000}
. bench/lib.sh
refuse_ports_in_use 3299 10877
rm -rf "$dir"; mkdir -p "$dir"
dotnet "$tree/daemon/Ballast.Daemon/bin/Release/net10.0/ballastd.dll" --data-dir "$dir/b" --pool-size 8GiB \
  --api-socket "$dir/api.sock" --nbd-listen 127.0.0.1:10877 --iscsi-listen 127.0.0.1:3299 --log-level warning \
  --volume bench:2GiB >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf --unix-socket "$dir/api.sock" http://b/v1/status >/dev/null 2>&1 && break; sleep 0.1; done
qemu-img bench -w -c "$count" -d 1 -s 4096 -S 4096 -t none -f raw "iscsi://127.0.0.1:3299/iqn.2026-11.io.ballast:bench/0" 2>&1 | tail -1
curl -s --unix-socket "$dir/api.sock" http://b/metrics | awk '/^ballast_pool_(inline_batches|early_acks)_total/{printf "%s=%s ", $1, $2} END{print ""}'
