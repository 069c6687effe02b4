#!/usr/bin/env bash
# End-to-end proof of the VM harness: start peer servers on this host
# (nbdkit, tgtd) bound to 127.0.0.1, run the example guest scripts in the VM
# with the real kernel NBD / iSCSI clients, cross-check the written ext4 images
# on the host, stop the servers.
#
# Usage: run-examples.sh [CASE...]      (default: all cases)
#   cases: smoke nbd iscsi iscsi-chap iscsi-chap-bad iscsi-mutual-digest iscsi-mutual-bad
#
# Env: NBD_PORT (default 10810), ISCSI_PORT (default 3260) - the next free port
#      is used if taken; BALLAST_VM_TIMEOUT etc. are passed on to run-vm.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_VM="$HERE/../run-vm.sh"
ALL_CASES=(smoke nbd iscsi iscsi-chap iscsi-chap-bad iscsi-mutual-digest iscsi-mutual-bad)
CASES=("$@")
(( ${#CASES[@]} )) || CASES=("${ALL_CASES[@]}")
for c in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $c "* ]] || { echo "unknown case: $c (known: ${ALL_CASES[*]})" >&2; exit 2; }
done

for t in nbdkit tgtd tgtadm e2fsck debugfs ss; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install nbdkit tgt e2fsprogs iproute2)" >&2; exit 2; }
done

log() { echo "[run-examples] $*" >&2; }

STATE="$(mktemp -d "${TMPDIR:-/tmp}/ballast-vm-examples.XXXXXX")"
NBDKIT_PID=""
TGTD_PID=""
TGT_CP=""

port_in_use() { [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]; }
free_port() { local p="$1"; while port_in_use "$p"; do p=$((p+1)); done; echo "$p"; }
wait_listen() {  # port pid
  for _ in $(seq 100); do
    port_in_use "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

stop_servers() {
  if [[ -n "$TGTD_PID" ]] && kill -0 "$TGTD_PID" 2>/dev/null; then
    # tgtd ignores SIGTERM while targets exist: remove them, then the system.
    local tid
    for tid in 1 2 3; do
      tgtadm -C "$TGT_CP" --lld iscsi --op delete --mode target --tid "$tid" --force >/dev/null 2>&1 || true
    done
    tgtadm -C "$TGT_CP" --op delete --mode system >/dev/null 2>&1 || true
    for _ in $(seq 30); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TGTD_PID" 2>/dev/null || true
    wait "$TGTD_PID" 2>/dev/null || true
  fi
  [[ -n "$TGT_CP" ]] && rm -f "/var/run/tgtd/socket.$TGT_CP" "/var/run/tgtd/socket.$TGT_CP.lock"
  if [[ -n "$NBDKIT_PID" ]] && kill -0 "$NBDKIT_PID" 2>/dev/null; then
    kill -TERM "$NBDKIT_PID" 2>/dev/null || true
    wait "$NBDKIT_PID" 2>/dev/null || true
  fi
  TGTD_PID=""; NBDKIT_PID=""
}
VM_PID=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  if [[ -n "$VM_PID" ]] && kill -0 "$VM_PID" 2>/dev/null; then
    kill -TERM "$VM_PID" 2>/dev/null || true   # run-vm.sh stops its qemu
    wait "$VM_PID" 2>/dev/null || true
  fi
  stop_servers
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build the image up front so its time is not charged to the first case.
"$HERE/../build-image.sh"

# ------------------------------------------------------------------ nbdkit ---
NBD_PORT="$(free_port "${NBD_PORT:-10810}")"
truncate -s 256M "$STATE/nbd.img"
# file plugin (not memory) so the host can fsck what the guest wrote.
nbdkit --foreground --exit-with-parent --ipaddr 127.0.0.1 --port "$NBD_PORT" \
  file "$STATE/nbd.img" > "$STATE/nbdkit.log" 2>&1 &
NBDKIT_PID=$!
wait_listen "$NBD_PORT" "$NBDKIT_PID" || { cat "$STATE/nbdkit.log" >&2; log "nbdkit did not start"; exit 1; }
log "nbdkit pid $NBDKIT_PID on 127.0.0.1:$NBD_PORT"

# -------------------------------------------------------------------- tgtd ---
ISCSI_PORT="$(free_port "${ISCSI_PORT:-3260}")"
mkdir -p /var/run/tgtd
TGT_CP=$(( 20000 + $$ % 10000 ))
while [[ -e "/var/run/tgtd/socket.$TGT_CP" ]]; do TGT_CP=$((TGT_CP+1)); done
# -C: private management socket (coexists with a system tgtd);
# --iscsi portal=: listen on 127.0.0.1 only (default is 0.0.0.0:3260 + [::]).
tgtd -f -C "$TGT_CP" --iscsi "portal=127.0.0.1:$ISCSI_PORT" > "$STATE/tgtd.log" 2>&1 &
TGTD_PID=$!
wait_listen "$ISCSI_PORT" "$TGTD_PID" || { cat "$STATE/tgtd.log" >&2; log "tgtd did not start"; exit 1; }
log "tgtd pid $TGTD_PID on 127.0.0.1:$ISCSI_PORT (control port $TGT_CP)"

TGTADM=(tgtadm -C "$TGT_CP" --lld iscsi)
CHAP_USER=ballast-init CHAP_PASS=init-secret-12      # initiator -> target
MUT_USER=ballast-target MUT_PASS=target-secret-34    # target -> initiator (mutual)
add_target() {  # tid iqn
  truncate -s 256M "$STATE/lun$1.img"
  "${TGTADM[@]}" --op new --mode target --tid "$1" -T "$2"
  "${TGTADM[@]}" --op new --mode logicalunit --tid "$1" --lun 1 -b "$STATE/lun$1.img"
  "${TGTADM[@]}" --op bind --mode target --tid "$1" -I ALL
}
# t1: no authentication, no digests.
add_target 1 iqn.2026-11.io.test:t1
# t2: one-way CHAP.
add_target 2 iqn.2026-11.io.test:t2
"${TGTADM[@]}" --op new --mode account --user "$CHAP_USER" --password "$CHAP_PASS"
"${TGTADM[@]}" --op bind --mode account --tid 2 --user "$CHAP_USER"
# t3: mutual CHAP + CRC32C header and data digests (required by the target).
add_target 3 iqn.2026-11.io.test:t3
"${TGTADM[@]}" --op new --mode account --user "$MUT_USER" --password "$MUT_PASS"
"${TGTADM[@]}" --op bind --mode account --tid 3 --user "$CHAP_USER"
"${TGTADM[@]}" --op bind --mode account --tid 3 --user "$MUT_USER" --outgoing
"${TGTADM[@]}" --op update --mode target --tid 3 --name HeaderDigest --value CRC32C
"${TGTADM[@]}" --op update --mode target --tid 3 --name DataDigest --value CRC32C

# ------------------------------------------------------------------- cases ---
host_check() {  # image -> e2fsck -fn + read a file back with debugfs
  e2fsck -fn "$1" >"$STATE/fsck.out" 2>&1 || { cat "$STATE/fsck.out" >&2; return 1; }
  [[ "$(debugfs -R 'cat /dir/sub/hello.txt' "$1" 2>/dev/null)" == "hello ballast" ]] || {
    log "host: hello.txt not found in $1"; return 1; }
  log "host: e2fsck -fn clean and /dir/sub/hello.txt readable in $(basename "$1")"
}

run_case() {
  local c="$1" ; local -a env=() ; local script img=""
  case "$c" in
    smoke) script=smoke.sh ;;
    nbd) script=nbd-ext4.sh; img="$STATE/nbd.img"
         env=(NBD_PORT="$NBD_PORT" NBD_EXPORT=ballast) ;;
    iscsi) script=iscsi-ext4.sh; img="$STATE/lun1.img"
         env=(ISCSI_PORT="$ISCSI_PORT" ISCSI_TARGET=iqn.2026-11.io.test:t1) ;;
    iscsi-chap) script=iscsi-ext4.sh; img="$STATE/lun2.img"
         env=(ISCSI_PORT="$ISCSI_PORT" ISCSI_TARGET=iqn.2026-11.io.test:t2
              ISCSI_USER="$CHAP_USER" ISCSI_PASS="$CHAP_PASS" ISCSI_FILES=2) ;;
    iscsi-chap-bad) script=iscsi-ext4.sh
         env=(ISCSI_PORT="$ISCSI_PORT" ISCSI_TARGET=iqn.2026-11.io.test:t2
              ISCSI_USER="$CHAP_USER" ISCSI_PASS=wrong-secret-99 ISCSI_EXPECT_LOGIN_FAIL=1) ;;
    iscsi-mutual-digest) script=iscsi-ext4.sh; img="$STATE/lun3.img"
         env=(ISCSI_PORT="$ISCSI_PORT" ISCSI_TARGET=iqn.2026-11.io.test:t3
              ISCSI_USER="$CHAP_USER" ISCSI_PASS="$CHAP_PASS"
              ISCSI_USER_IN="$MUT_USER" ISCSI_PASS_IN="$MUT_PASS"
              ISCSI_HEADER_DIGEST=CRC32C ISCSI_DATA_DIGEST=CRC32C
              ISCSI_EXPECT_DIGESTS=1 ISCSI_FILES=2) ;;
    iscsi-mutual-bad) script=iscsi-ext4.sh
         env=(ISCSI_PORT="$ISCSI_PORT" ISCSI_TARGET=iqn.2026-11.io.test:t3
              ISCSI_USER="$CHAP_USER" ISCSI_PASS="$CHAP_PASS"
              ISCSI_USER_IN="$MUT_USER" ISCSI_PASS_IN=wrong-secret-99
              ISCSI_HEADER_DIGEST=CRC32C ISCSI_DATA_DIGEST=CRC32C
              ISCSI_EXPECT_LOGIN_FAIL=1) ;;
  esac
  local -a args=()
  local e
  for e in "${env[@]}"; do args+=(--env "$e"); done
  # Background + wait, so a TERM/INT to this script is handled at once (bash
  # defers traps while a foreground child runs); cleanup stops the VM.
  "$RUN_VM" "$HERE/$script" "${args[@]}" &
  VM_PID=$!
  local vrc=0
  wait "$VM_PID" || vrc=$?
  VM_PID=""
  [[ $vrc == 0 ]] || return "$vrc"
  if [[ -n "$img" ]]; then host_check "$img" || return 1; fi
}

PASS=0 FAIL=0
SUMMARY=()
for c in "${CASES[@]}"; do
  log "---- case $c"
  t0=${EPOCHREALTIME/./}
  set +e; run_case "$c"; rc=$?; set -e
  ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  dt="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
  if [[ $rc == 0 ]]; then PASS=$((PASS+1)); SUMMARY+=("PASS $c (${dt}s)")
  else FAIL=$((FAIL+1)); SUMMARY+=("FAIL $c (exit $rc, ${dt}s)"); fi
  log "---- case $c: exit $rc in ${dt}s"
done

stop_servers
echo
printf '%s\n' "${SUMMARY[@]}"
echo "$PASS passed, $FAIL failed"
[[ $FAIL == 0 ]]
