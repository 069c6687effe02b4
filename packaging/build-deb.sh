#!/usr/bin/env bash
# Builds artifacts/deb/ballast_<version>_amd64.deb: ballastd and ballastctl published
# self-contained (the target needs no .NET) into /usr/lib/ballast/, the systemd unit,
# sysusers.d and tmpfiles.d entries, the default config as a conffile, docs and maintainer
# scripts. Safe to run again: each run starts from an empty staging tree. The last line
# printed is the path of the .deb.
#
# Usage: packaging/build-deb.sh
# Env:   BALLAST_DEB_MAINTAINER  the control file's Maintainer (default below)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$repo/artifacts/deb"
stage="$out/root"
# Build outputs of the publish live here, not in the projects' bin/ and obj/: a linux-x64
# restore would otherwise rewrite the assets files the everyday build uses.
build="$out/build"
rid=linux-x64
arch=amd64
maintainer="${BALLAST_DEB_MAINTAINER:-Ballast developers <ballast@localhost>}"

die() {
  echo "build-deb.sh: $*" >&2
  exit 1
}

require_tools() {
  command -v dotnet >/dev/null || die "dotnet not found on PATH: install the .NET 10 SDK"
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found on PATH: apt-get install dpkg"
}

# <Version> from Directory.Build.props, in Debian's spelling: a SemVer pre-release
# (1.2.0-rc.1) becomes 1.2.0~rc.1 so that it sorts before the release.
package_version() {
  local v
  v=$(sed -n 's:.*<Version>\([^<]*\)</Version>.*:\1:p' "$repo/Directory.Build.props" | head -n 1)
  [[ -n $v ]] || die "no <Version> in $repo/Directory.Build.props"
  v=${v//-/\~}
  [[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version \"$v\" is not a valid Debian version"
  echo "$v"
}

# Both programs go into one directory: they share the runtime files, and each publish only
# adds its own apphost, dll, deps.json and runtimeconfig.json.
publish() {
  local project=$1
  echo "build-deb.sh: publishing $project" >&2
  # No build servers: they would outlive this script and keep its output pipe open for
  # whoever runs it (tests read that pipe to the end).
  MSBUILDDISABLENODEREUSE=1 DOTNET_CLI_USE_MSBUILD_SERVER=0 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 \
    dotnet publish "$repo/$project" -c Release -r "$rid" --self-contained \
      --artifacts-path "$build" -o "$stage/usr/lib/ballast" \
      -nologo -v quiet -nodeReuse:false -p:UseSharedCompilation=false >&2
}

install_programs() {
  publish daemon/Ballast.Daemon
  publish daemon/Ballast.Cli
  [[ -x $stage/usr/lib/ballast/ballastd && -x $stage/usr/lib/ballast/ballastctl ]] \
    || die "publish did not produce usr/lib/ballast/ballastd and ballastctl"
  # The apphost resolves its own path through the link and finds the runtime beside it.
  mkdir -p "$stage/usr/bin"
  ln -s ../lib/ballast/ballastd "$stage/usr/bin/ballastd"
  ln -s ../lib/ballast/ballastctl "$stage/usr/bin/ballastctl"
}

install_system_files() {
  install -D -m 0644 "$repo/systemd/ballastd.service" "$stage/lib/systemd/system/ballastd.service"
  install -D -m 0644 "$repo/systemd/sysusers.d/ballast.conf" "$stage/usr/lib/sysusers.d/ballast.conf"
  install -D -m 0644 "$repo/systemd/tmpfiles.d/ballast.conf" "$stage/usr/lib/tmpfiles.d/ballast.conf"
  install -D -m 0644 "$repo/systemd/ballastd.json" "$stage/etc/ballast/ballastd.json"
  install -D -m 0644 "$repo/packaging/deb/copyright" "$stage/usr/share/doc/ballast/copyright"
  install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/ballast/README.md"
  install -D -m 0644 "$repo/packaging/README.md" "$stage/usr/share/doc/ballast/README.Debian.md"
}

write_control() {
  local version=$1 size
  size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
  mkdir -p "$stage/DEBIAN"
  # Libraries the bundled runtime links against (glibc 2.27 and GLIBCXX_3.4.22 are the newest
  # symbol versions it uses) plus OpenSSL, which .NET loads for NBD TLS. The user comes from
  # systemd-sysusers or, without systemd (containers), adduser.
  cat >"$stage/DEBIAN/control" <<EOF
Package: ballast
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: libc6 (>= 2.27), libgcc-s1, libstdc++6 (>= 6), libssl3, adduser | systemd-sysusers
Recommends: systemd
Suggests: libnbd-bin, nbd-client
Section: admin
Priority: optional
Description: userspace block-storage daemon serving volumes over NBD
 ballastd keeps virtual volumes in a log-structured pool in /var/lib/ballast and
 serves each one as a block device over NBD (the Linux kernel's nbd client, qemu,
 libnbd). ballastctl creates, lists, snapshots, clones, resizes and deletes volumes
 through ballastd's control API socket (/run/ballast/api.sock).
 .
 The package is self-contained: the .NET runtime is bundled in /usr/lib/ballast.
 It installs ballastd.service (enabled, not started) running as the system user
 ballast; the settings are in /etc/ballast/ballastd.json.
EOF
  echo /etc/ballast/ballastd.json >"$stage/DEBIAN/conffiles"
  install -m 0755 "$repo/packaging/deb/postinst" "$repo/packaging/deb/prerm" "$repo/packaging/deb/postrm" "$stage/DEBIAN/"
}

main() {
  require_tools
  local version deb
  version=$(package_version)
  deb="$out/ballast_${version}_${arch}.deb"
  rm -rf "$stage" "$deb"
  mkdir -p "$stage"
  install_programs
  install_system_files
  write_control "$version"
  # Files belong to root in the package whoever builds it, so no fakeroot is needed. xz at
  # level 1: 6 s instead of 40 s for a package 12% larger (most of it is the .NET runtime).
  dpkg-deb --root-owner-group -Zxz -z1 --build "$stage" "$deb" >&2
  echo "$deb"
}

main "$@"
