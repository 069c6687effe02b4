#!/usr/bin/env bash
# Installs the Debian packages the test suites use (real NBD/iSCSI peers, the VM harness, fio).
# Only what is missing is installed; needs root (or sudo) when something is missing.
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils qemu-block-extra busybox-static kmod cpio
  nbd-client open-iscsi e2fsprogs libnbd-bin python3-libnbd nbdkit fio libiscsi-bin tgt
  iproute2 iptables systemd dpkg-dev fakeroot python3 curl strace
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "test dependencies: all present"
  exit 0
fi
echo "test dependencies: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "test dependencies: installed"
