# Shared by the bench scripts (sourced, from the repository root).

# Stops the run if a port it is about to listen on is taken: a server left over from an
# earlier run would answer in place of the one started here, and its figures would be wrong.
refuse_ports_in_use() { # port...
  local port
  for port in "$@"; do
    if ss -Hltn "sport = :$port" | grep -q .; then
      echo "port $port is in use (a server left from an earlier run?): stop it first" >&2
      exit 2
    fi
  done
}

# Starts TREE's ballastd with a 12 GiB pool in DIR/b and one 4 GiB volume "bench" served on NBD at
# 127.0.0.1:PORT (no iSCSI; API socket DIR/api.sock; log DIR/log), waits until its API answers,
# and sets pid (a caller's local pid, if it has one). Arguments after LEVEL are environment
# assignments for ballastd (VAR=value).
start_bench_ballastd() { # tree dir port log-level [VAR=value...]
  local tree=$1 dir=$2 port=$3 level=$4
  shift 4
  env "$@" dotnet "$tree/daemon/Ballast.Daemon/bin/Release/net10.0/ballastd.dll" --data-dir "$dir/b" --pool-size 12GiB \
    --api-socket "$dir/api.sock" --nbd-listen "127.0.0.1:$port" --iscsi-listen off --log-level "$level" \
    --volume bench:4GiB >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf --unix-socket "$dir/api.sock" http://b/v1/status >/dev/null 2>&1 && break; sleep 0.1; done
}
