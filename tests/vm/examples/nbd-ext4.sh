#!/bin/sh
# Guest script (runs inside the VM as /run.sh under busybox sh).
# Kernel NBD client round trip: attach, mkfs.ext4, write files, detach,
# re-attach, fsck, verify checksums.
#
# Env (pass with run-vm.sh --env): NBD_HOST (default 10.0.2.2 = host 127.0.0.1),
# NBD_PORT (default 10810), NBD_EXPORT (export name; default: server default),
# NBD_DEV (default /dev/nbd0), NBD_FILES (number of 4 MiB files, default 8).
set -eu
H="${NBD_HOST:-10.0.2.2}"
P="${NBD_PORT:-10810}"
DEV="${NBD_DEV:-/dev/nbd0}"
N="${NBD_FILES:-8}"
NAME_ARGS=""
[ -n "${NBD_EXPORT:-}" ] && NAME_ARGS="-N ${NBD_EXPORT}"

step() { echo "== $*"; }

attach() {
  # nbd-client 3.x: newstyle handshake only; "-N name" selects the export.
  # It configures the device over netlink and returns immediately.
  # shellcheck disable=SC2086
  /sbin/nbd-client $NAME_ARGS -b 4096 "$H" "$P" "$DEV"
  i=0
  while [ "$(/sbin/blockdev --getsize64 "$DEV" 2>/dev/null || echo 0)" = 0 ]; do
    i=$((i+1)); [ $i -lt 50 ] || { echo "device never got a size"; exit 1; }
    sleep 0.1
  done
  echo "$DEV size: $(/sbin/blockdev --getsize64 "$DEV") bytes"
}

detach() {
  /sbin/nbd-client -d "$DEV"
  i=0
  while [ "$(cat "/sys/block/${DEV#/dev/}/size")" != 0 ]; do
    i=$((i+1)); [ $i -lt 50 ] || { echo "device did not detach"; exit 1; }
    sleep 0.1
  done
}

step "attach $H:$P -> $DEV"
attach

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

step "detach"
detach
echo 3 > /proc/sys/vm/drop_caches

step "re-attach + e2fsck -fn"
attach
/sbin/e2fsck -fn "$DEV"

step "mount + verify"
mount -t ext4 -o ro "$DEV" /mnt
(cd /mnt && md5sum -c /root/sums)
df -h /mnt | tail -n1
umount /mnt
detach
step "NBD OK"
