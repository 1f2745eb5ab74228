#!/usr/bin/env bash
# Builds the pointsd MSI on Linux from installers/windows/pointsd.wxs (the one installer source)
# with msitools' wixl: target/pointsd-<version>-x64.msi. On Windows use build-msi.ps1 (WiX).
#
#   cargo build --release --target x86_64-pc-windows-gnu
#   installers/windows/build-msi.sh [--binary PATH] [--version X.Y.Z] [--output FILE]
#
# Needs python3, wixl (Debian package wixl) and msibuild/msiinfo (package msitools).
# installers/windows/wixl.py turns the WiX v4 source into the dialect wixl reads and adds the
# tables wixl cannot write (permanent components, ACLs, service failure actions).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
binary="$repo/target/x86_64-pc-windows-gnu/release/pointsd.exe"
version=""
output=""

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --output) output="${2:?--output needs a path}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-msi.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

for tool in python3 wixl msibuild msiinfo; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-msi.sh: $tool not found (apt-get install python3 wixl msitools)" >&2
    exit 1
  fi
done
if [ -z "$version" ]; then
  version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml" | head -n 1)"
  [ -n "$version" ] || { echo "build-msi.sh: no version in Cargo.toml; pass --version" >&2; exit 1; }
fi
# An MSI version is numeric (major.minor.patch): a pre-release suffix such as -rc.1 is dropped.
msi_version="${version%%[-+]*}"
[ -n "$output" ] || output="$repo/target/pointsd-$version-x64.msi"
if [ ! -f "$binary" ]; then
  echo "build-msi.sh: $binary not found; run 'cargo build --release --target x86_64-pc-windows-gnu' or pass --binary" >&2
  exit 1
fi

mkdir -p "$(dirname "$output")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$repo/installers/windows/wixl.py" "$repo/installers/windows/pointsd.wxs" \
  -D "Version=$msi_version" \
  -D "BinaryPath=$binary" \
  -D "ConfigSource=$repo/config/pointsd.example.toml" \
  -D "ReadmeSource=$repo/README.md" \
  --wixl-out "$work/pointsd.wixl.wxs" \
  -o "$output"
echo "built $output"
