#!/usr/bin/env bash
# Boot a throw-away qemu VM (TCG, no KVM needed) that runs GUEST_SCRIPT as /run.sh
# and exit with that script's exit status.
#
# Usage: run-vm.sh GUEST_SCRIPT [options]
#   --timeout SECONDS   kill qemu after this long (default 240; env BALLAST_VM_TIMEOUT)
#   --mem MB            guest memory (default 512; env BALLAST_VM_MEM)
#   --smp N             guest CPUs (default 1; env BALLAST_VM_SMP)
#   --env KEY=VALUE     export KEY=VALUE in the guest before /run.sh (repeatable)
#   --add HOST[:GUEST]  copy a host file into the guest (default GUEST path:
#                       /root/<basename>); repeatable
#   --append ARGS       extra kernel command line arguments
#   --log FILE          also write the serial console output to FILE
#
# Exit status: the guest script's status (from the "BALLAST-VM-EXIT N" line),
# 124 if the timeout expired before that line appeared, 125 if qemu ended
# without printing it (kernel panic, init crash, ...), 2 on usage errors.
#
# The guest sees the host's 127.0.0.1 as 10.0.2.2 (qemu user networking);
# the guest itself is 10.0.2.15/24. Inside the guest, busybox's sh prefers its
# applets: call /sbin/nbd-client, /sbin/iscsistart, /sbin/mke2fs, /sbin/e2fsck,
# /sbin/blockdev by full path.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TIMEOUT="${BALLAST_VM_TIMEOUT:-240}"
MEM="${BALLAST_VM_MEM:-512}"
SMP="${BALLAST_VM_SMP:-1}"
APPEND_EXTRA="${BALLAST_VM_APPEND:-}"
LOGFILE=""
GUEST_SCRIPT=""
ENVS=()
ADDS=()

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while (( $# )); do
  case "$1" in
    --timeout) TIMEOUT="${2:?}"; shift 2 ;;
    --timeout=*) TIMEOUT="${1#*=}"; shift ;;
    --mem) MEM="${2:?}"; shift 2 ;;
    --mem=*) MEM="${1#*=}"; shift ;;
    --smp) SMP="${2:?}"; shift 2 ;;
    --smp=*) SMP="${1#*=}"; shift ;;
    --env) ENVS+=("${2:?}"); shift 2 ;;
    --env=*) ENVS+=("${1#*=}"); shift ;;
    --add) ADDS+=("${2:?}"); shift 2 ;;
    --add=*) ADDS+=("${1#*=}"); shift ;;
    --append) APPEND_EXTRA="$APPEND_EXTRA ${2:?}"; shift 2 ;;
    --append=*) APPEND_EXTRA="$APPEND_EXTRA ${1#*=}"; shift ;;
    --log) LOGFILE="${2:?}"; shift 2 ;;
    --log=*) LOGFILE="${1#*=}"; shift ;;
    -h|--help) usage ;;
    -*) echo "run-vm.sh: unknown option $1" >&2; usage ;;
    *) if [[ -n "$GUEST_SCRIPT" ]]; then echo "run-vm.sh: extra argument $1" >&2; usage; fi
       GUEST_SCRIPT="$1"; shift ;;
  esac
done
[[ -n "$GUEST_SCRIPT" ]] || usage
[[ -f "$GUEST_SCRIPT" ]] || { echo "run-vm.sh: no such file: $GUEST_SCRIPT" >&2; exit 2; }
[[ "$TIMEOUT" =~ ^[0-9]+$ && "$MEM" =~ ^[0-9]+$ && "$SMP" =~ ^[0-9]+$ ]] || {
  echo "run-vm.sh: --timeout/--mem/--smp must be integers" >&2; exit 2; }

command -v qemu-system-x86_64 >/dev/null || { echo "run-vm.sh: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 2; }

IMG="$("$HERE/build-image.sh" --print-dir)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ballast-vm.XXXXXX")"
TPID=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  if [[ -n "$TPID" ]] && kill -0 "$TPID" 2>/dev/null; then
    # timeout(1) forwards TERM to qemu; escalate to KILL for both if needed.
    kill -TERM "$TPID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$TPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$TPID" 2>/dev/null; then
      pkill -KILL -P "$TPID" 2>/dev/null || true
      kill -KILL "$TPID" 2>/dev/null || true
    fi
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Per-run overlay: /run.sh, /etc/ballast-env, extra files. Appended to the base
# initramfs as a second (separately gzipped) newc archive.
O="$WORK/overlay"
mkdir -p "$O/etc"
cp "$GUEST_SCRIPT" "$O/run.sh"
chmod 755 "$O/run.sh"
: > "$O/etc/ballast-env"
for kv in "${ENVS[@]+"${ENVS[@]}"}"; do
  k="${kv%%=*}"; v="${kv#*=}"
  [[ "$k" =~ ^[A-Za-z_][A-Za-z0-9_]*$ && "$kv" == *=* ]] || { echo "run-vm.sh: bad --env $kv" >&2; exit 2; }
  printf "export %s='%s'\n" "$k" "${v//\'/\'\\\'\'}" >> "$O/etc/ballast-env"
done
for spec in "${ADDS[@]+"${ADDS[@]}"}"; do
  src="${spec%%:*}"
  if [[ "$spec" == *:* ]]; then dst="${spec#*:}"; else dst="/root/$(basename "$src")"; fi
  [[ -e "$src" ]] || { echo "run-vm.sh: --add: no such file $src" >&2; exit 2; }
  mkdir -p "$O$(dirname "$dst")"
  cp -a "$src" "$O$dst"
done
(cd "$O" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 > "$WORK/overlay.cpio.gz"
cat "$IMG/base.cpio.gz" "$WORK/overlay.cpio.gz" > "$WORK/initrd.gz"

# qboot (if present) boots the kernel directly and silently; SeaBIOS/iPXE
# would print banners and terminal escape codes on the serial console.
BIOS_ARGS=()
[[ -f /usr/share/qemu/qboot.rom ]] && BIOS_ARGS=(-bios /usr/share/qemu/qboot.rom)

APPEND="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off tsc=unstable 8250.nr_uarts=1 $APPEND_EXTRA"

LOG="$WORK/console.log"
# Run qemu under timeout(1) in the background so our traps can kill it; tee
# the serial console to stdout and to a log we parse afterwards.
set +e
{
  timeout --kill-after=5 "$TIMEOUT" \
    qemu-system-x86_64 -accel tcg -machine q35 -m "$MEM" -smp "$SMP" \
      -nodefaults -no-user-config -nographic -no-reboot "${BIOS_ARGS[@]+"${BIOS_ARGS[@]}"}" \
      -serial stdio -monitor none \
      -kernel "$IMG/vmlinuz" -initrd "$WORK/initrd.gz" -append "$APPEND" \
      -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
      < /dev/null 2>&1 &
  echo $! > "$WORK/timeout.pid"
  wait $!
  echo $? > "$WORK/qemu.rc"
} | tee -p "$LOG" &
PIPE_PID=$!
for _ in $(seq 50); do [[ -s "$WORK/timeout.pid" ]] && break; sleep 0.1; done
TPID="$(cat "$WORK/timeout.pid" 2>/dev/null || true)"
wait "$PIPE_PID"
set -e
QRC="$(cat "$WORK/qemu.rc" 2>/dev/null || echo 1)"

[[ -n "$LOGFILE" ]] && cp "$LOG" "$LOGFILE"

MARK="$(tr -d '\r' < "$LOG" | grep -aoE 'BALLAST-VM-EXIT [0-9]+' | tail -n1 || true)"
if [[ -n "$MARK" ]]; then
  exit "${MARK##* }"
elif [[ "$QRC" == 124 || "$QRC" == 137 ]]; then
  echo "run-vm.sh: timeout after ${TIMEOUT}s" >&2
  exit 124
else
  echo "run-vm.sh: guest never printed BALLAST-VM-EXIT (qemu exit $QRC)" >&2
  exit 125
fi
