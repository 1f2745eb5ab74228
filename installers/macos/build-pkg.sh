#!/bin/sh
# Build pointsd-<version>.pkg for macOS with pkgbuild (on a Mac, after `cargo build --release`).
#
# Payload (installed onto /, root:wheel):
#   /usr/local/bin/pointsd
#   /usr/local/share/pointsd/pointsd.example.toml, README.md
#   /Library/LaunchDaemons/jp.pointsd.plist
# Scripts: preinstall unloads a running pointsd; postinstall creates
# /Library/Application Support/pointsd (config only when missing, data/) and /Library/Logs/pointsd,
# then loads the daemon with `launchctl bootstrap system`. The config and the data are not in the
# payload, so an upgrade never touches them.
#
# Deploy: sudo installer -pkg target/pointsd-<version>.pkg -target /   (or through the MDM; most
# MDMs want a package signed with a "Developer ID Installer" identity: pass --sign).
set -eu

prog=build-pkg.sh
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
Usage: installers/macos/build-pkg.sh [options]

Options:
  --binary PATH        pointsd binary (default: a universal binary made with lipo from
                       target/{aarch64,x86_64}-apple-darwin/release/pointsd when both exist,
                       else target/release/pointsd)
  --version VERSION    package version (default: version in Cargo.toml)
  --out DIR            where the .pkg goes (default: target)
  --sign IDENTITY      sign with this "Developer ID Installer: ..." identity
  --stage-only DIR     only lay out the payload and scripts in DIR and print the pkgbuild
                       command (works on any OS; used by the tests)
  -h, --help           this help
EOF
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
repo_dir=$(CDPATH='' cd -- "$script_dir/../.." && pwd)

binary=
version=
out=$repo_dir/target
sign=
stage_only=

while [ $# -gt 0 ]; do
    case $1 in
    --binary | --version | --out | --sign | --stage-only)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --binary) binary=$2 ;;
        --version) version=$2 ;;
        --out) out=$2 ;;
        --sign) sign=$2 ;;
        --stage-only) stage_only=$2 ;;
        esac
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown option: $1"
        ;;
    esac
done

if [ -z "$version" ]; then
    version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$repo_dir/Cargo.toml" | head -n 1)
    [ -n "$version" ] || die "no version in Cargo.toml: pass --version"
fi

if [ -n "$stage_only" ]; then
    stage=$stage_only
    mkdir -p "$stage"
    [ -z "$(ls -A "$stage")" ] || die "--stage-only $stage: directory is not empty"
else
    [ "$(uname -s)" = Darwin ] || die "pkgbuild runs on macOS only (use --stage-only DIR elsewhere)"
    command -v pkgbuild >/dev/null 2>&1 || die "pkgbuild not found (install the Xcode command line tools)"
    stage=$(mktemp -d "${TMPDIR:-/tmp}/pointsd-pkg.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
fi
root=$stage/root
scripts=$stage/scripts
mkdir -p "$root/usr/local/bin" "$root/usr/local/share/pointsd" "$root/Library/LaunchDaemons" "$scripts"

# The binary: given, universal, or this machine's release build.
arm=$repo_dir/target/aarch64-apple-darwin/release/pointsd
intel=$repo_dir/target/x86_64-apple-darwin/release/pointsd
if [ -n "$binary" ]; then
    [ -f "$binary" ] || die "--binary $binary: no such file"
    cp "$binary" "$root/usr/local/bin/pointsd"
elif [ -f "$arm" ] && [ -f "$intel" ] && command -v lipo >/dev/null 2>&1; then
    lipo -create -output "$root/usr/local/bin/pointsd" "$arm" "$intel"
else
    [ -f "$repo_dir/target/release/pointsd" ] || die "no target/release/pointsd: run 'cargo build --release' or pass --binary"
    cp "$repo_dir/target/release/pointsd" "$root/usr/local/bin/pointsd"
fi
chmod 0755 "$root/usr/local/bin/pointsd"

cp "$repo_dir/config/pointsd.example.toml" "$root/usr/local/share/pointsd/pointsd.example.toml"
cp "$repo_dir/README.md" "$root/usr/local/share/pointsd/README.md"
# HQ's side of fleet monitoring (README "Fleet monitoring").
mkdir -p "$root/usr/local/share/pointsd/prometheus" "$root/usr/local/share/pointsd/grafana"
cp "$repo_dir/installers/prometheus/pointsd-alerts.yml" "$repo_dir/installers/prometheus/pointsd-alerts.test.yml" \
    "$root/usr/local/share/pointsd/prometheus/"
cp "$repo_dir/installers/grafana/pointsd-fleet.json" "$root/usr/local/share/pointsd/grafana/"
chmod 0644 "$root/usr/local/share/pointsd/prometheus/"* "$root/usr/local/share/pointsd/grafana/"*
cp "$script_dir/jp.pointsd.plist" "$root/Library/LaunchDaemons/jp.pointsd.plist"
chmod 0644 "$root/usr/local/share/pointsd/pointsd.example.toml" "$root/usr/local/share/pointsd/README.md" \
    "$root/Library/LaunchDaemons/jp.pointsd.plist"
cp "$script_dir/scripts/preinstall" "$script_dir/scripts/postinstall" "$scripts/"
chmod 0755 "$scripts/preinstall" "$scripts/postinstall"

if command -v plutil >/dev/null 2>&1; then
    plutil -lint "$root/Library/LaunchDaemons/jp.pointsd.plist" >/dev/null || die "jp.pointsd.plist does not lint"
fi
if command -v xattr >/dev/null 2>&1; then
    # A quarantine flag copied into the payload would stop launchd from running the binary.
    xattr -cr "$root" 2>/dev/null || true
fi

pkg=$out/pointsd-$version.pkg
set -- pkgbuild --root "$root" --scripts "$scripts" --identifier jp.pointsd --version "$version" \
    --install-location / --ownership recommended
if [ -n "$sign" ]; then
    set -- "$@" --sign "$sign"
fi
set -- "$@" "$pkg"

if [ -n "$stage_only" ]; then
    echo "staged in $stage; on a Mac this would run:"
    echo "  $*"
    exit 0
fi

mkdir -p "$out"
"$@"
echo "built $pkg"
