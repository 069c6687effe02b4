#!/usr/bin/env bash
# Build (or reuse) the VM kernel + base initramfs used by tests/vm/run-vm.sh.
#
# Output: ${BALLAST_VM_CACHE:-/var/cache/ballast-vm}/img-<key>/{vmlinuz,base.cpio.gz,KERNEL}
# where <key> is derived from this script's contents and the kernel package
# requested, so editing this script (including the embedded /init) rebuilds.
#
# Usage: build-image.sh [--print-dir] [--force]
#   --print-dir  print only the image directory on stdout (logs go to stderr)
#   --force      rebuild even if a cached image exists
#
# Env:
#   BALLAST_VM_CACHE       cache root (default /var/cache/ballast-vm)
#   BALLAST_VM_KERNEL_PKG  Debian kernel package to use (default: pinned below,
#                          falling back to the newest 6.12 / 6.1 cloud kernel)
set -euo pipefail

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
CACHE="${BALLAST_VM_CACHE:-/var/cache/ballast-vm}"

# Pinned kernel (Debian 12 bookworm-backports-style 6.12 cloud kernel, signed).
# If the mirror no longer carries it, we fall back to whatever the
# linux-image-6.12-cloud-amd64 / linux-image-cloud-amd64 meta packages depend on.
PINNED_KERNEL_PKG="linux-image-6.12.117+deb12-cloud-amd64"
KERNEL_PKG_REQ="${BALLAST_VM_KERNEL_PKG:-$PINNED_KERNEL_PKG}"
FALLBACK_META_PKGS=(linux-image-6.12-cloud-amd64 linux-image-cloud-amd64)

# Kernel modules to load at boot, in this order; dependencies are resolved
# from modules.dep (built-ins are skipped automatically).
BOOT_MODULES=(virtio_pci virtio_net nbd scsi_mod sd_mod scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp)
# Host binaries copied into the initramfs (with their shared libraries).
HOST_BINS=(/usr/sbin/nbd-client /usr/sbin/iscsistart /usr/sbin/mke2fs /usr/sbin/e2fsck
           /usr/sbin/tune2fs /usr/sbin/dumpe2fs /usr/sbin/blockdev)

PRINT_DIR=0
FORCE=0
for a in "$@"; do
  case "$a" in
    --print-dir) PRINT_DIR=1 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,16p' "$SCRIPT_PATH"; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $a" >&2; exit 2 ;;
  esac
done

log() { echo "[build-image] $*" >&2; }

KEY="$( { cat "$SCRIPT_PATH"; echo "$KERNEL_PKG_REQ"; } | sha256sum | cut -c1-16)"
OUT="$CACHE/img-$KEY"

done_msg() {
  if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; else
    log "image ready: $OUT ($(cat "$OUT/KERNEL"))"
  fi
}

if [[ $FORCE == 0 && -f "$OUT/.complete" ]]; then
  done_msg; exit 0
fi

for t in dpkg-deb depmod modprobe cpio gzip xz ldd busybox apt-get "${HOST_BINS[@]}"; do
  if ! command -v "$t" >/dev/null 2>&1; then
    log "missing host tool: $t (apt-get install qemu-system-x86 busybox-static kmod cpio nbd-client open-iscsi e2fsprogs xz-utils)"
    exit 1
  fi
done
if [[ ! -x /bin/busybox ]] || ! /bin/busybox --list >/dev/null 2>&1; then
  log "need busybox-static (/bin/busybox)"; exit 1
fi
if ldd /bin/busybox >/dev/null 2>&1; then
  log "/bin/busybox is dynamically linked; install busybox-static"; exit 1
fi

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.build.lock"
flock 9
# Someone else may have finished the build while we waited for the lock.
if [[ $FORCE == 0 && -f "$OUT/.complete" ]]; then
  done_msg; exit 0
fi

# Leftovers of a killed build (we hold the lock, so nobody else is building).
rm -rf "$CACHE"/work.*
T0=$SECONDS
WORK="$(mktemp -d "$CACHE/work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- kernel ---
pkg_available() { apt-cache show "$1" >/dev/null 2>&1; }

resolve_kernel_pkg() {
  if pkg_available "$KERNEL_PKG_REQ"; then echo "$KERNEL_PKG_REQ"; return 0; fi
  local meta dep
  for meta in "${FALLBACK_META_PKGS[@]}"; do
    dep="$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
    if [[ -n "$dep" ]] && pkg_available "$dep"; then echo "$dep"; return 0; fi
  done
  return 1
}

# Reuse a previously downloaded .deb for the requested package if present.
shopt -s nullglob
debs=("$CACHE/debs/${KERNEL_PKG_REQ}_"*.deb)
shopt -u nullglob
if (( ${#debs[@]} )); then
  DEB="${debs[0]}"
  KPKG="$KERNEL_PKG_REQ"
else
  if ! KPKG="$(resolve_kernel_pkg)"; then
    log "kernel package not found in apt lists; running apt-get update"
    apt-get update -qq >&2 || true
    KPKG="$(resolve_kernel_pkg)" || { log "no usable linux-image-*-cloud-amd64 package"; exit 1; }
  fi
  [[ "$KPKG" != "$KERNEL_PKG_REQ" ]] && log "pinned $KERNEL_PKG_REQ unavailable, using $KPKG"
  shopt -s nullglob
  debs=("$CACHE/debs/${KPKG}_"*.deb)
  shopt -u nullglob
  if (( ${#debs[@]} )); then
    DEB="${debs[0]}"
  else
    log "downloading $KPKG"
    # apt-get download writes into the cwd; _apt cannot write to root-owned
    # dirs, so download in a world-writable scratch dir under the cache.
    mkdir -p "$WORK/dl" && chmod 777 "$WORK/dl"
    (cd "$WORK/dl" && apt-get download -q "$KPKG" >&2 2> >(grep -v 'unsandboxed' >&2))
    mv "$WORK/dl/"*.deb "$CACHE/debs/"
    debs=("$CACHE/debs/${KPKG}_"*.deb)
    DEB="${debs[0]}"
  fi
fi
log "extracting $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/k"
KVER="$(find "$WORK/k/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)"
[[ -n "$KVER" && -f "$WORK/k/boot/vmlinuz-$KVER" ]] || { log "unexpected package layout"; exit 1; }
depmod -b "$WORK/k" "$KVER"

# ------------------------------------------------------------- initramfs ---
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,run,tmp,mnt,root,var/lock,var/run,lib/x86_64-linux-gnu,lib64,etc/iscsi}
chmod 1777 "$R/tmp"

# Modules: resolve with modprobe --show-depends against the extracted tree
# (-C /dev/null so host modprobe.d options do not leak in), decompress.
KMOD_SRC="$WORK/k/lib/modules/$KVER"
KMOD_DST="$R/lib/modules/$KVER"
mkdir -p "$KMOD_DST"
: > "$R/etc/ballast-modules"
declare -A SEEN=()
for m in "${BOOT_MODULES[@]}"; do
  deps="$(modprobe -C /dev/null -d "$WORK/k" -S "$KVER" --show-depends "$m" 2>/dev/null)" || {
    log "module $m not found (skipping)"; continue; }
  while read -r kind path _; do
    [[ "$kind" == insmod ]] || continue          # "builtin xyz" lines
    rel="${path#"$KMOD_SRC"/}"
    dst="$KMOD_DST/${rel%.xz}"
    dst="${dst%.zst}"; dst="${dst%.gz}"
    [[ -n "${SEEN[$rel]:-}" ]] && continue
    SEEN[$rel]=1
    mkdir -p "$(dirname "$dst")"
    case "$path" in
      *.xz) xz -dc "$path" > "$dst" ;;
      *.zst) zstd -qdc "$path" > "$dst" ;;
      *.gz) gzip -dc "$path" > "$dst" ;;
      *) cp "$path" "$dst" ;;
    esac
    echo "${dst#"$KMOD_DST"/}" >> "$R/etc/ballast-modules"
  done <<< "$deps"
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
  [[ -f "$KMOD_SRC/$f" ]] && cp "$KMOD_SRC/$f" "$KMOD_DST/"
done
depmod -b "$R" "$KVER"
log "modules: $(sed 's#.*/##; s#\.ko$##' "$R/etc/ballast-modules" | tr '\n' ' ')"

# busybox + applet symlinks (in /bin; /sbin is reserved for the real tools).
cp /bin/busybox "$R/bin/busybox"
for app in $(/bin/busybox --list); do
  [[ "$app" == busybox ]] && continue
  ln -sf busybox "$R/bin/$app"
done

# Real tools + shared libraries + dynamic loader.
copy_lib() {
  local src="$1" dst="$R$1"
  [[ -e "$dst" ]] && return 0
  mkdir -p "$(dirname "$dst")"
  cp -L "$src" "$dst"
}
for b in "${HOST_BINS[@]}"; do
  cp -L "$b" "$R/sbin/$(basename "$b")"
  while read -r lib; do
    copy_lib "$lib"
  done < <(ldd "$b" | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}')
done
ln -sf mke2fs "$R/sbin/mkfs.ext4"
ln -sf mke2fs "$R/sbin/mkfs.ext3"
ln -sf mke2fs "$R/sbin/mkfs.ext2"
ln -sf e2fsck "$R/sbin/fsck.ext4"
[[ -e "$R/lib64/ld-linux-x86-64.so.2" ]] || copy_lib /lib64/ld-linux-x86-64.so.2
cp /etc/mke2fs.conf "$R/etc/mke2fs.conf"

# Minimal /etc.
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
EOF
echo "ballast-vm" > "$R/etc/hostname"
printf '127.0.0.1 localhost\n10.0.2.2 host\n' > "$R/etc/hosts"
# iscsistart reads iscsid.conf; an empty one means "all defaults".
: > "$R/etc/iscsi/iscsid.conf"
echo "$KVER" > "$R/etc/ballast-kernel"

cat > "$R/init" <<'EOF'
#!/bin/sh
# ballast-vm /init: minimal boot, run /run.sh, report status, power off.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /run/lock/iscsi
hostname "$(cat /etc/hostname)"

# Serial console: make our output go there even if stdout is odd.
exec </dev/console >/dev/console 2>&1

KVER="$(cat /etc/ballast-kernel)"
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "/lib/modules/$KVER/$mod" 2>/dev/null || {
    # already loaded (e.g. dependency of an earlier entry) or failed
    name="$(basename "$mod" .ko | tr - _)"
    grep -q "^$name " /proc/modules || echo "ballast-init: failed to load $mod"
  }
done < /etc/ballast-modules

# Network for qemu -netdev user: guest 10.0.2.15, host (and host 127.0.0.1) = 10.0.2.2
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
else
  echo "ballast-init: no eth0"
fi

[ -f /etc/ballast-env ] && . /etc/ballast-env

if [ -f /run.sh ]; then
  cd /root
  /bin/sh /run.sh
  rc=$?
else
  echo "ballast-init: /run.sh missing"
  rc=127
fi
cd /
sync
# Leading newline: kernel messages may have left a partial line.
echo
echo "BALLAST-VM-EXIT $rc"
poweroff -f
sleep 5
echo o > /proc/sysrq-trigger
EOF
chmod 755 "$R/init"

log "packing initramfs"
mkdir -p "$WORK/out"
(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 > "$WORK/out/base.cpio.gz"
cp "$WORK/k/boot/vmlinuz-$KVER" "$WORK/out/vmlinuz"
echo "$KPKG $(dpkg-deb -f "$DEB" Version) ($KVER)" > "$WORK/out/KERNEL"
touch "$WORK/out/.complete"

rm -rf "$OUT"
mv "$WORK/out" "$OUT"
# Drop older images (other keys); keep downloaded .debs.
for d in "$CACHE"/img-*; do
  [[ "$d" == "$OUT" ]] && continue
  rm -rf "$d"
done
log "built in $((SECONDS - T0))s: $(du -sh "$OUT/base.cpio.gz" | cut -f1) initramfs, kernel $KVER"
done_msg
