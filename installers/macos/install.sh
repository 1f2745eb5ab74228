#!/bin/sh
# Install (or remove) pointsd as a LaunchDaemon on macOS without the .pkg. Same layout as the
# .pkg (see build-pkg.sh) and the same postinstall script:
#
#   /usr/local/bin/pointsd                                  the binary (0755)
#   /Library/Application Support/pointsd/                   root:wheel 0750
#   /Library/Application Support/pointsd/pointsd.toml       root:wheel 0600, never overwritten
#   /Library/Application Support/pointsd/data/              database and logs/
#   /Library/Logs/pointsd/                                  stdout and stderr of the daemon
#   /Library/LaunchDaemons/jp.pointsd.plist                 loaded with launchctl bootstrap
#
# Safe to run again: an upgrade unloads the daemon, replaces the binary and the plist, keeps the
# config and the data, and loads it again. DESTDIR=/some/root writes into a scratch root and
# calls no launchctl (tests).
set -eu

prog=install.sh
notice() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
Usage: sudo installers/macos/install.sh [--binary PATH] [--config-source FILE]
       sudo installers/macos/install.sh --uninstall [--purge]

Options:
  --binary PATH          the pointsd binary (default target/release/pointsd of this checkout,
                         else ./pointsd)
  --config-source FILE   config to install when none exists yet (default: the example config)
  --uninstall            unload and remove the daemon and the binary; keeps the config, the
                         data and the logs
  --purge                with --uninstall: also delete them
  -h, --help             this help

Environment:
  DESTDIR                install into this scratch root; no launchctl
EOF
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
repo_dir=$(CDPATH='' cd -- "$script_dir/../.." && pwd)

binary=
config_source=
action=install
purge=0

while [ $# -gt 0 ]; do
    case $1 in
    --binary | --config-source)
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --binary) binary=$2 ;;
        --config-source) config_source=$2 ;;
        esac
        shift 2
        ;;
    --uninstall)
        action=uninstall
        shift
        ;;
    --purge)
        purge=1
        shift
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
[ "$purge" = 0 ] || [ "$action" = uninstall ] || die "--purge only goes with --uninstall"

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
if [ -n "$DESTDIR" ]; then
    case $DESTDIR in
    /*) ;;
    *) DESTDIR=$(pwd)/$DESTDIR ;;
    esac
    notice "DESTDIR=$DESTDIR: no launchctl"
else
    [ "$(uname -s)" = Darwin ] || die "this is the macOS installer (installers/linux/install.sh for Linux)"
    [ "$(id -u)" -eq 0 ] || die "needs root: run it with sudo"
fi
vol=${DESTDIR:-/}

support="$DESTDIR/Library/Application Support/pointsd"
plist=$DESTDIR/Library/LaunchDaemons/jp.pointsd.plist
bin=$DESTDIR/usr/local/bin/pointsd
share=$DESTDIR/usr/local/share/pointsd

install_file() { # install_file SRC DEST MODE: atomic replace
    tmp="$2.new.$$"
    cp -- "$1" "$tmp"
    chmod "$3" "$tmp"
    if [ -z "$DESTDIR" ]; then
        chown 0:0 "$tmp"
    fi
    mv -f -- "$tmp" "$2"
}

do_install() {
    if [ -z "$binary" ]; then
        for candidate in "$repo_dir/target/release/pointsd" ./pointsd "$script_dir/pointsd"; do
            if [ -f "$candidate" ]; then
                binary=$candidate
                break
            fi
        done
        [ -n "$binary" ] || die "no pointsd binary found: run 'cargo build --release' or pass --binary PATH"
    fi
    [ -f "$binary" ] || die "--binary $binary: no such file"
    [ -z "$config_source" ] || [ -f "$config_source" ] || die "--config-source $config_source: no such file"
    example=$repo_dir/config/pointsd.example.toml
    [ -f "$example" ] || example=$script_dir/pointsd.example.toml
    [ -f "$example" ] || die "no example config found next to this script"

    # Unload a running copy first (no-op without launchctl or with DESTDIR).
    sh "$script_dir/scripts/preinstall" "" "" "$vol" ""

    mkdir -p "$(dirname "$bin")" "$share" "$(dirname "$plist")"
    install_file "$binary" "$bin" 0755
    if [ -z "$DESTDIR" ] && command -v xattr >/dev/null 2>&1; then
        # A downloaded binary carries a quarantine flag that stops launchd from running it.
        xattr -d com.apple.quarantine "$bin" 2>/dev/null || true
    fi
    install_file "$example" "$share/pointsd.example.toml" 0644
    if [ -f "$repo_dir/README.md" ]; then
        install_file "$repo_dir/README.md" "$share/README.md" 0644
    fi
    install_file "$script_dir/jp.pointsd.plist" "$plist" 0644

    # A prepared config goes in only when there is none; postinstall installs the example
    # otherwise, fixes the modes and loads the daemon.
    if [ -n "$config_source" ] && [ ! -e "$support/pointsd.toml" ]; then
        mkdir -p "$support"
        (
            umask 077
            cp -- "$config_source" "$support/pointsd.toml"
        )
        chmod 0600 "$support/pointsd.toml"
        if [ -z "$DESTDIR" ]; then
            chown 0:0 "$support/pointsd.toml"
        fi
    fi
    sh "$script_dir/scripts/postinstall" "" "" "$vol" ""
    notice "installed pointsd to /usr/local/bin/pointsd"
}

do_uninstall() {
    if [ -z "$DESTDIR" ] && launchctl print system/jp.pointsd >/dev/null 2>&1; then
        launchctl bootout system/jp.pointsd || true
        notice "unloaded jp.pointsd"
    fi
    rm -f -- "$plist" "$bin"
    rm -rf -- "$share"
    notice "removed the daemon and /usr/local/bin/pointsd"
    if [ "$purge" = 1 ]; then
        rm -rf -- "$support" "$DESTDIR/Library/Logs/pointsd"
        notice "purged /Library/Application Support/pointsd and /Library/Logs/pointsd"
    else
        notice "kept /Library/Application Support/pointsd (config, data) and /Library/Logs/pointsd;"
        notice "'--uninstall --purge' deletes them"
    fi
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
esac
