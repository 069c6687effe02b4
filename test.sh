#!/usr/bin/env bash
# Installs what the tests need and runs every test suite. The last line reads
# "N passed, N failed, N skipped" (all suites summed); the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v dotnet >/dev/null; then
  echo "the .NET 10 SDK is required (dotnet not found on PATH)" >&2
  exit 2
fi
scripts/install-test-deps.sh

results=artifacts/test-results
rm -rf "$results"
mkdir -p "$results"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build -c Release Ballast.slnx -nologo -v quiet

status=0
for project in tests/*/*.csproj; do
  grep -q '<IsTestProject>true</IsTestProject>' "$project" || continue
  name=$(basename "$project" .csproj)
  echo "== $name"
  if ! dotnet test "$project" -c Release --no-build --nologo \
      --blame-hang-timeout 10m \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" \
      --results-directory "$results"; then
    status=1
    if [[ ! -f "$results/$name.trx" ]]; then
      echo "$name produced no results (the test host crashed)" > "$results/$name.crashed"
    fi
  fi
done

summary=$(python3 scripts/sum-trx.py "$results")
echo "$summary"
case "$summary" in
  *" 0 failed"*) exit "$status" ;;
  *) exit 1 ;;
esac
