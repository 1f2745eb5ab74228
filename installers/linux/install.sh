#!/bin/sh
# Install (or remove) pointsd as a systemd service on Linux distributions without the .deb.
# Same layout as the .deb, except the binary (<prefix>/bin) and the unit (/etc/systemd/system):
#
#   <prefix>/bin/pointsd                      the binary (0755)
#   /etc/pointsd/pointsd.toml                 the config (root:pointsd 0640; never overwritten)
#   /etc/systemd/system/pointsd.service       the unit, ExecStart=<prefix>/bin/pointsd run ...
#   /var/lib/pointsd, /var/log/pointsd        data and logs (pointsd:pointsd 0750)
#   <prefix>/share/doc/pointsd/               README and the current example config
#   <prefix>/share/pointsd/                   HQ's alert rules (prometheus/) and dashboard (grafana/)
#
# Safe to run again: an upgrade replaces the binary and the unit, keeps the config, and restarts
# a running service. DESTDIR=/some/root installs into a scratch root (packaging, tests): then no
# user is created, nothing is chowned and systemctl is not called.
set -eu

prog=install.sh
notice() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
Usage: sudo installers/linux/install.sh [options]
       sudo installers/linux/install.sh --uninstall [--purge] [--prefix DIR]

Installs pointsd as the systemd service pointsd.service, running as the system user pointsd.

Options:
  --prefix DIR           where bin/pointsd goes (default /usr/local)
  --binary PATH          the pointsd binary to install (default target/release/pointsd of this
                         checkout, else ./pointsd)
  --config-source FILE   config to install when /etc/pointsd/pointsd.toml does not exist yet
                         (default config/pointsd.example.toml); an existing config is kept
  --no-start             install and enable, but do not start or restart the service
  --uninstall            stop and remove the service and the binary; keeps the config, the data
                         (/var/lib/pointsd) and the logs
  --purge                with --uninstall: also delete config, data, logs and the pointsd user
  -h, --help             this help

Environment:
  DESTDIR                install into this scratch root; skips useradd, chown and systemctl
EOF
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
repo_dir=$(CDPATH='' cd -- "$script_dir/../.." && pwd)

prefix=/usr/local
prefix_given=0
binary=
config_source=
action=install
purge=0
start=1

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case $1 in
    --prefix)
        need_value "$1" $#
        prefix=$2
        prefix_given=1
        shift 2
        ;;
    --prefix=*)
        prefix=${1#*=}
        prefix_given=1
        shift
        ;;
    --binary)
        need_value "$1" $#
        binary=$2
        shift 2
        ;;
    --binary=*)
        binary=${1#*=}
        shift
        ;;
    --config-source)
        need_value "$1" $#
        config_source=$2
        shift 2
        ;;
    --config-source=*)
        config_source=${1#*=}
        shift
        ;;
    --no-start)
        start=0
        shift
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

# The prefix ends up in the unit's ExecStart line, which has its own quoting rules: keep it plain.
case $prefix in
/*) ;;
*) die "--prefix must be an absolute path: $prefix" ;;
esac
case $prefix in
*[!A-Za-z0-9._/+-]*) die "--prefix may hold only letters, digits and . _ / + -: $prefix" ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || die "--prefix / is not supported: use /usr"

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
if [ -n "$DESTDIR" ]; then
    case $DESTDIR in
    /*) ;;
    *) DESTDIR=$(pwd)/$DESTDIR ;;
    esac
fi

# "system" means: really install on this machine (root, no DESTDIR). Otherwise accounts,
# ownership and systemctl are skipped, and only files are written.
system=1
if [ -n "$DESTDIR" ]; then
    system=0
    notice "DESTDIR=$DESTDIR: skipping user creation, chown and systemctl"
elif [ "$(id -u)" -ne 0 ]; then
    die "needs root for /etc, /var/lib and systemd: run it with sudo (or set DESTDIR for a scratch root)"
fi

bindir=$prefix/bin
docdir=$prefix/share/doc/pointsd
sharedir=$prefix/share/pointsd
unit_dest=$DESTDIR/etc/systemd/system/pointsd.service

systemd_running() {
    [ "$system" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

have_entry() { # have_entry passwd|group NAME
    getent "$1" "$2" >/dev/null 2>&1
}

# Owner and mode of a path; owner only when really installing.
own() { # own OWNER:GROUP MODE PATH
    if [ "$system" = 1 ]; then
        chown "$1" "$3"
    fi
    chmod "$2" "$3"
}

install_file() { # install_file SRC DEST MODE: atomic replace, so a running binary is never torn
    tmp="$2.new.$$"
    cp -- "$1" "$tmp"
    chmod "$3" "$tmp"
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
    [ -x "$binary" ] || die "--binary $binary: not executable"

    if [ -z "$config_source" ]; then
        for candidate in "$repo_dir/config/pointsd.example.toml" "$script_dir/pointsd.example.toml" \
            ./pointsd.example.toml; do
            if [ -f "$candidate" ]; then
                config_source=$candidate
                break
            fi
        done
        [ -n "$config_source" ] || die "no example config found: pass --config-source FILE"
    fi
    [ -f "$config_source" ] || die "--config-source $config_source: no such file"
    [ -f "$script_dir/pointsd.service" ] || die "$script_dir/pointsd.service is missing"

    if [ "$system" = 1 ] && command -v dpkg-query >/dev/null 2>&1 &&
        dpkg-query -W -f='${Status}' pointsd 2>/dev/null | grep -q 'ok installed'; then
        die "pointsd is installed as a Debian package: upgrade it with 'apt install ./pointsd_*.deb' instead"
    fi

    # 1. The service account: a system user with no login, home /var/lib/pointsd.
    if [ "$system" = 1 ]; then
        command -v useradd >/dev/null 2>&1 || die "useradd not found: create a system user 'pointsd' by hand and rerun"
        if ! have_entry group pointsd; then
            groupadd --system pointsd
            notice "created group pointsd"
        fi
        if ! have_entry passwd pointsd; then
            nologin=/usr/sbin/nologin
            [ -x "$nologin" ] || nologin=/sbin/nologin
            [ -x "$nologin" ] || nologin=/bin/false
            useradd --system --gid pointsd --home-dir /var/lib/pointsd --no-create-home \
                --shell "$nologin" --comment "pointsd loyalty point agent" pointsd
            notice "created user pointsd"
        fi
    fi

    # 2. Directories.
    mkdir -p "$DESTDIR$bindir" "$DESTDIR$docdir" "$DESTDIR/etc/pointsd" "$DESTDIR/etc/systemd/system" \
        "$DESTDIR/var/lib/pointsd" "$DESTDIR/var/log/pointsd"
    own root:pointsd 0750 "$DESTDIR/etc/pointsd"
    own pointsd:pointsd 0750 "$DESTDIR/var/lib/pointsd"
    own pointsd:pointsd 0750 "$DESTDIR/var/log/pointsd"

    # 3. The binary, the docs (the example shows the keys a new version knows).
    install_file "$binary" "$DESTDIR$bindir/pointsd" 0755
    install_file "$config_source" "$DESTDIR$docdir/pointsd.example.toml" 0644
    if [ -f "$repo_dir/README.md" ]; then
        install_file "$repo_dir/README.md" "$DESTDIR$docdir/README.md" 0644
    fi
    # HQ's side of fleet monitoring (README "Fleet monitoring"), as in the .deb.
    for f in prometheus/pointsd-alerts.yml prometheus/pointsd-alerts.test.yml grafana/pointsd-fleet.json; do
        if [ -f "$repo_dir/installers/$f" ]; then
            mkdir -p "$DESTDIR$sharedir/${f%/*}"
            install_file "$repo_dir/installers/$f" "$DESTDIR$sharedir/$f" 0644
        fi
    done

    # 4. The config: it holds secrets, and an existing one is the administrator's.
    config=$DESTDIR/etc/pointsd/pointsd.toml
    if [ -e "$config" ]; then
        notice "keeping the existing $config (new keys: see $docdir/pointsd.example.toml)"
    else
        tmp="$config.new.$$"
        (
            umask 077
            cp -- "$config_source" "$tmp"
        )
        own root:pointsd 0640 "$tmp"
        mv -f -- "$tmp" "$config"
        notice "installed $config: edit it (store_id, tokens, Smaregi credentials), then check it with"
        notice "  $bindir/pointsd config check --config /etc/pointsd/pointsd.toml"
    fi

    # 5. The unit, pointing at this prefix's binary.
    tmp="$unit_dest.new.$$"
    sed "s|^ExecStart=.*|ExecStart=$bindir/pointsd run --config /etc/pointsd/pointsd.toml|" \
        "$script_dir/pointsd.service" >"$tmp"
    chmod 0644 "$tmp"
    mv -f -- "$tmp" "$unit_dest"

    # 6. Enable and (re)start.
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable pointsd.service
        if [ "$start" = 0 ]; then
            notice "enabled pointsd.service (not started: --no-start)"
        elif systemctl is-active --quiet pointsd.service; then
            systemctl restart pointsd.service
            notice "restarted pointsd.service"
        else
            systemctl start pointsd.service
            notice "started pointsd.service"
        fi
    elif [ "$system" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        # e.g. a container or chroot: enabling only writes symlinks.
        systemctl enable pointsd.service >/dev/null 2>&1 || notice "could not enable pointsd.service"
        notice "systemd is not running here: pointsd.service is enabled but not started"
    elif [ "$system" = 1 ]; then
        notice "systemctl not found: start '$bindir/pointsd run --config /etc/pointsd/pointsd.toml' as user pointsd yourself"
    fi
    notice "installed pointsd to $bindir/pointsd"
}

do_uninstall() {
    # Find the installed binary from the unit, unless --prefix says where it is.
    target=$DESTDIR$bindir/pointsd
    if [ "$prefix_given" = 0 ] && [ -f "$unit_dest" ]; then
        exec_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit_dest" | head -n 1)
        case $exec_bin in
        /*/bin/pointsd)
            target=$DESTDIR$exec_bin
            docdir=${exec_bin%/bin/pointsd}/share/doc/pointsd
            sharedir=${exec_bin%/bin/pointsd}/share/pointsd
            ;;
        esac
    fi

    if systemd_running; then
        systemctl disable --now pointsd.service >/dev/null 2>&1 || true
    elif [ "$system" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable pointsd.service >/dev/null 2>&1 || true
    fi
    rm -f -- "$unit_dest"
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed pointsd.service >/dev/null 2>&1 || true
    fi
    rm -f -- "$target"
    rm -rf -- "$DESTDIR$docdir" "$DESTDIR$sharedir"
    notice "removed the service and $target"

    if [ "$purge" = 1 ]; then
        rm -rf -- "$DESTDIR/etc/pointsd" "$DESTDIR/var/lib/pointsd" "$DESTDIR/var/log/pointsd"
        notice "purged /etc/pointsd, /var/lib/pointsd and /var/log/pointsd"
        if [ "$system" = 1 ]; then
            if have_entry passwd pointsd; then
                userdel pointsd || notice "could not delete user pointsd; delete it by hand"
            fi
            if have_entry group pointsd; then
                groupdel pointsd || notice "could not delete group pointsd; delete it by hand"
            fi
        fi
    else
        notice "kept the config (/etc/pointsd), the data (/var/lib/pointsd) and the logs (/var/log/pointsd);"
        notice "'--uninstall --purge' deletes them and the pointsd user"
    fi
}

case $action in
install) do_install ;;
uninstall) do_uninstall ;;
esac
