#!/bin/sh
# Guest script: boot sanity check - kernel, modules, network to the host, tools.
set -eu
echo "kernel $(uname -r)"
for m in nbd iscsi_tcp sd_mod; do
  grep -q "^$m " /proc/modules || { echo "module $m not loaded"; exit 1; }
done
[ -b /dev/nbd0 ] || { echo "/dev/nbd0 missing"; exit 1; }
ip -4 addr show eth0 | grep -q 10.0.2.15 || { echo "eth0 not configured"; exit 1; }
ping -c1 -W5 10.0.2.2 >/dev/null || { echo "host 10.0.2.2 unreachable"; exit 1; }
for t in /sbin/nbd-client /sbin/iscsistart /sbin/mke2fs /sbin/e2fsck /sbin/blockdev; do
  [ -x "$t" ] || { echo "$t missing"; exit 1; }
done
/sbin/mke2fs -V 2>&1 | head -n1
echo "smoke OK"
