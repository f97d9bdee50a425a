#!/usr/bin/env bash
# Installs what mailherd's build, lab and tests need on Debian, as root.
# Idempotent: packages already present are left alone.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (the lab creates namespaces, loop devices and mounts)" >&2
    exit 1
fi

packages=(
    iproute2 util-linux e2fsprogs procps psmisc iptables
    postfix dovecot-core dovecot-imapd
    # The probes' tests start a Postfix and a Dovecot (IMAP and POP3) of their own.
    dovecot-pop3d
    ca-certificates pkg-config gcc jq curl
    # The mariadb probe's tests start a mariadbd of their own.
    mariadb-server
    # `mailherd render keepalived` output is checked with `keepalived -t`.
    keepalived
    # `mailherd render haproxy` output is checked with `haproxy -c`, and the lab runs one.
    haproxy
    # `mailherd render dns` output is checked with named-checkzone.
    bind9-utils
    # The dashboard is tested in a headless browser.
    chromium
    # The /metrics test parses the exposition with the reference parser.
    python3-prometheus-client
    # scripts/package.sh strips the binary and reads its glibc needs
    # (binutils); the packaging test renders the man page with `man -l`.
    binutils man-db
    # Storage replication's btrfs driver is tested on loop devices.
    btrfs-progs
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    # Postfix asks how to configure itself; the lab writes its own config.
    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages start their daemons where policy allows; the lab runs
# its own per-node instances, so the host's must not hold ports 25 and 143;
# the tests run their own mariadbd, so the host's is not needed either, and
# keepalived is only needed for `keepalived -t` (a running one would move
# addresses on the host).
for unit in postfix dovecot mariadb keepalived; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
        systemctl stop "$unit" || true
    fi
done

if ! command -v cargo >/dev/null; then
    cat >&2 <<'MSG'
install-deps: cargo is missing. mailherd needs Rust 1.90 or newer; install it with rustup
(https://rustup.rs), then run this again. Debian's own rustc is too old for the dependencies.
MSG
    exit 1
fi
echo "install-deps: ok ($(cargo --version))"
