#!/bin/sh
# Guest script (runs inside the VM as /run.sh under busybox sh).
# Kernel iSCSI initiator (iscsi_tcp, logged in with iscsistart) round trip:
# login, wait for the LUN's sdX, mkfs.ext4, write files, drop the SCSI disk
# and rescan (forces re-reading from the target), e2fsck -fn, verify.
#
# Env (pass with run-vm.sh --env):
#   ISCSI_HOST (default 10.0.2.2 = host 127.0.0.1), ISCSI_PORT (3260),
#   ISCSI_TARGET (iqn.2026-11.io.test:t1), ISCSI_INITIATOR
#   (iqn.2026-11.io.ballast:vm), ISCSI_TPGT (1), ISCSI_LUN (1),
#   ISCSI_USER/ISCSI_PASS        one-way CHAP (initiator authenticates)
#   ISCSI_USER_IN/ISCSI_PASS_IN  mutual CHAP (target authenticates back)
#   ISCSI_HEADER_DIGEST / ISCSI_DATA_DIGEST  e.g. CRC32C (or "CRC32C,None")
#   ISCSI_EXPECT_DIGESTS=1       fail unless both digests negotiated CRC32C
#   ISCSI_FILES (number of 4 MiB files, default 8)
#   ISCSI_LOGIN_TIMEOUT (seconds, default 60; iscsistart retries an
#                        unreachable portal forever)
#   ISCSI_EXPECT_LOGIN_FAIL=1    only check that login is refused, then exit 0
set -eu
H="${ISCSI_HOST:-10.0.2.2}"
P="${ISCSI_PORT:-3260}"
T="${ISCSI_TARGET:-iqn.2026-11.io.test:t1}"
I="${ISCSI_INITIATOR:-iqn.2026-11.io.ballast:vm}"
G="${ISCSI_TPGT:-1}"
LUN="${ISCSI_LUN:-1}"
N="${ISCSI_FILES:-8}"
LT="${ISCSI_LOGIN_TIMEOUT:-60}"

step() { echo "== $*"; }

set -- -i "$I" -t "$T" -g "$G" -a "$H" -p "$P"
[ -n "${ISCSI_USER:-}" ] && set -- "$@" -u "$ISCSI_USER" -w "${ISCSI_PASS:-}"
[ -n "${ISCSI_USER_IN:-}" ] && set -- "$@" -U "$ISCSI_USER_IN" -W "${ISCSI_PASS_IN:-}"
[ -n "${ISCSI_HEADER_DIGEST:-}" ] && set -- "$@" -P "node.conn[0].iscsi.HeaderDigest=$ISCSI_HEADER_DIGEST"
[ -n "${ISCSI_DATA_DIGEST:-}" ] && set -- "$@" -P "node.conn[0].iscsi.DataDigest=$ISCSI_DATA_DIGEST"

step "iscsistart login $I -> $T @ $H:$P"
if [ "${ISCSI_EXPECT_LOGIN_FAIL:-0}" = 1 ]; then
  # Must fail, and because of authentication (not e.g. an unreachable portal).
  rc=0
  timeout "$LT" /sbin/iscsistart "$@" > /tmp/login.out 2>&1 || rc=$?
  cat /tmp/login.out
  [ "$rc" != 0 ] || { echo "login unexpectedly succeeded"; exit 1; }
  grep -qi 'authenticat' /tmp/login.out || { echo "login failed, but not with an authentication error (rc $rc)"; exit 1; }
  step "login refused as expected (authentication failure)"
  exit 0
fi
timeout "$LT" /sbin/iscsistart "$@" || { echo "iscsistart failed/timed out ($?)"; exit 1; }

for c in /sys/class/iscsi_connection/connection*; do
  [ -e "$c" ] || continue
  hd="$(cat "$c/header_digest" 2>/dev/null || echo ?)"
  dd_="$(cat "$c/data_digest" 2>/dev/null || echo ?)"
  echo "$(basename "$c"): header_digest=$hd data_digest=$dd_ (0=None, 1=CRC32C)"
  if [ "${ISCSI_EXPECT_DIGESTS:-0}" = 1 ] && { [ "$hd" != 1 ] || [ "$dd_" != 1 ]; }; then
    echo "expected CRC32C header and data digests"; exit 1
  fi
done

# Find the block device of LUN $LUN under the iSCSI session.
find_disk() {
  for b in /sys/class/iscsi_session/session*/device/target*/*:*:*:"$LUN"/block/*; do
    [ -e "$b" ] && { basename "$b"; return 0; }
  done
  return 1
}
wait_disk() {
  i=0
  until DISK="$(find_disk)" && [ -b "/dev/$DISK" ] && [ "$(cat "/sys/block/$DISK/size")" != 0 ]; do
    i=$((i+1)); [ $i -lt 200 ] || { echo "LUN $LUN never appeared"; ls -R /sys/class/iscsi_session/ || true; exit 1; }
    sleep 0.1
  done
  DEV="/dev/$DISK"
  echo "LUN $LUN is $DEV, $(/sbin/blockdev --getsize64 "$DEV") bytes"
}
wait_disk

step "mkfs.ext4"
/sbin/mke2fs -q -F -t ext4 -L ballast "$DEV"

step "mount + write $N files"
mount -t ext4 "$DEV" /mnt
mkdir -p /mnt/dir/sub
i=0
while [ $i -lt "$N" ]; do
  dd if=/dev/urandom of="/mnt/dir/f$i" bs=1M count=4 2>/dev/null
  i=$((i+1))
done
echo "hello ballast" > /mnt/dir/sub/hello.txt
(cd /mnt && md5sum dir/f* dir/sub/hello.txt) > /root/sums
cat /root/sums
sync
umount /mnt

step "delete $DEV and rescan the SCSI host (drops all cached data)"
HCTL="$(basename "$(readlink -f "/sys/block/$DISK/device")")"   # e.g. 0:0:0:1
SHOST="host${HCTL%%:*}"
echo 1 > "/sys/block/$DISK/device/delete"
echo 3 > /proc/sys/vm/drop_caches
echo "- - -" > "/sys/class/scsi_host/$SHOST/scan"
wait_disk

step "e2fsck -fn"
/sbin/e2fsck -fn "$DEV"

step "mount + verify"
mount -t ext4 -o ro "$DEV" /mnt
(cd /mnt && md5sum -c /root/sums)
df -h /mnt | tail -n1
umount /mnt
step "iSCSI OK"
