#!/usr/bin/env bash
# Builds ballastd and runs it with a local data directory (./.ballast) and a 1 GiB demo volume,
# served on loopback over NBD (port 10809) and iSCSI (port 3260, target
# iqn.2026-11.io.ballast:demo), the default portals. Once ready, ballastd prints how to attach the
# volume (nbd-client, nbdinfo, iscsiadm, qemu-img, iscsi-inq); Ctrl-C stops it cleanly.
# Extra arguments go to ballastd (ballastd --help lists them), e.g. ./demo.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v dotnet >/dev/null; then
  echo "the .NET 10 SDK is required (dotnet not found on PATH)" >&2
  exit 2
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build -c Release daemon/Ballast.Daemon -nologo -v quiet >/dev/null
exec dotnet daemon/Ballast.Daemon/bin/Release/net10.0/ballastd.dll \
  --data-dir "$PWD/.ballast" --pool-size 8GiB --volume demo:1GiB "$@"
