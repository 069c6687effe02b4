#!/usr/bin/env bash
# What a defragmentation costs a client of the same volume: every 4 KiB block of a 4 GiB volume
# written once in random order (fio randwrite QD32), then fio's 4 KiB random reads at QD8 over
# NBD alone (20 s), during `volume defragment` (started 2 s in; DURING seconds, 20 by default)
# and after it. The reads use --norandommap: with fio's random map they follow the order its
# random writes took closely enough that the block layer merges pairs of them, and a volume
# written at random then reads 15-25% faster than one written in order. RATE=BYTES passes a
# rate limit (rateBytesPerSecond). Prints IOPS, mean, p99, p99.9 and max latency, the API's
# answer and ballastd's log lines about it.
#
#   bench/tools/defrag-impact.sh                      # no limit
#   RATE=$((64 << 20)) DURING=40 bench/tools/defrag-impact.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${BENCH_DIR:-$PWD/bench/out/defrag-impact}
port=${PORT:-10897}
. bench/lib.sh
refuse_ports_in_use "$port"
rm -rf "$dir"; mkdir -p "$dir/b"
trap 'kill ${pid:-} 2>/dev/null || true' EXIT
start_bench_ballastd . "$dir" "$port" information
uri="nbd://127.0.0.1:$port/bench"
fio --name=scatter --ioengine=nbd --uri="$uri" --size=4G --rw=randwrite --bs=4k --iodepth=32 --randseed=7 --output-format=terse >/dev/null
rr() { # seconds
  fio --name=rr --ioengine=nbd --uri="$uri" --size=4G --rw=randread --bs=4k --iodepth=8 --norandommap --runtime="$1" --time_based --output-format=json \
    | python3 -c 'import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index("{"):])["jobs"][0]["read"]; p=j["clat_ns"]["percentile"]; print("%.0f IOPS, mean %.0f us, p99 %.0f us, p99.9 %.0f us, max %.1f ms" % (j["iops"], j["clat_ns"]["mean"]/1e3, p["99.000000"]/1e3, p["99.900000"]/1e3, j["clat_ns"]["max"]/1e6))'
}
echo "alone:             $(rr 20)"
body="{}"; [ -n "${RATE:-}" ] && body="{\"rateBytesPerSecond\": $RATE}"
( sleep 2; curl -sf --unix-socket "$dir/api.sock" -X POST -H 'Content-Type: application/json' -d "$body" \
    http://b/v1/volumes/bench/defragment > "$dir/defrag.json" ) &
dpid=$!
echo "during defragment: $(rr "${DURING:-20}")"
wait $dpid
tr -d '\n ' < "$dir/defrag.json"; echo
echo "after:             $(rr 10)"
grep -i "defrag" "$dir/log" | tail -2
kill $pid; wait $pid 2>/dev/null || true
rm -rf "$dir"
