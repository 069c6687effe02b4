#!/bin/sh
# Guest script (busybox sh, /run.sh in the VM): the Linux kernel's NBD client against ballastd.
#
# MODE=roundtrip  attach, mkfs.ext4, write files, detach, re-attach, e2fsck -fn, verify, detach;
#                 prints "SUM <md5>  <file>" lines for a later verify run.
# MODE=verify     attach, e2fsck -fn, verify against /root/sums (added with run-vm.sh --add), detach.
#
# Env: NBD_HOST (10.0.2.2 = the host's 127.0.0.1), NBD_PORT, NBD_EXPORT, NBD_FILES (4 MiB files, default 6).
set -eu
H="${NBD_HOST:-10.0.2.2}"
P="${NBD_PORT:?NBD_PORT}"
E="${NBD_EXPORT:?NBD_EXPORT}"
N="${NBD_FILES:-6}"
DEV=/dev/nbd0

step() { echo "== $*"; }

attach() {
  /sbin/nbd-client -N "$E" -b 4096 "$H" "$P" "$DEV"
  i=0
  while [ "$(/sbin/blockdev --getsize64 "$DEV" 2>/dev/null || echo 0)" = 0 ]; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "device never got a size"; exit 1; }
    sleep 0.1
  done
  echo "$DEV size: $(/sbin/blockdev --getsize64 "$DEV") bytes"
}

detach() {
  /sbin/nbd-client -d "$DEV"
  i=0
  while [ "$(cat /sys/block/nbd0/size)" != 0 ]; do
    i=$((i+1)); [ $i -lt 100 ] || { echo "device did not detach"; exit 1; }
    sleep 0.1
  done
}

verify() {
  step "e2fsck -fn"
  /sbin/e2fsck -fn "$DEV"
  step "mount read-only + md5sum -c"
  mount -t ext4 -o ro "$DEV" /mnt
  (cd /mnt && md5sum -c /root/sums)
  umount /mnt
}

case "${MODE:-roundtrip}" in
  roundtrip)
    step "attach $H:$P export $E"
    attach
    step "mkfs.ext4"
    /sbin/mke2fs -q -F -t ext4 -L ballast "$DEV"
    step "write $N files"
    mount -t ext4 "$DEV" /mnt
    mkdir -p /mnt/dir/sub
    i=0
    while [ $i -lt "$N" ]; do
      dd if=/dev/urandom of="/mnt/dir/f$i" bs=1M count=4 2>/dev/null
      i=$((i+1))
    done
    echo "hello ballast" > /mnt/dir/sub/hello.txt
    (cd /mnt && md5sum dir/f* dir/sub/hello.txt) > /root/sums
    sed 's/^/SUM /' /root/sums
    sync
    umount /mnt
    step "detach, drop caches, re-attach"
    detach
    echo 3 > /proc/sys/vm/drop_caches
    attach
    verify
    detach
    ;;
  verify)
    step "attach $H:$P export $E after a daemon restart"
    attach
    verify
    detach
    ;;
  *) echo "unknown MODE ${MODE}"; exit 2 ;;
esac
step "NBD OK"
