#!/usr/bin/env bash
# Builds the Debian package target/debian/mailherd_<version>_<arch>.deb
# with dpkg-deb (no debhelper needed):
#   /usr/bin/mailherd                      release build, stripped
#   /lib/systemd/system/mailherd.service   the agent (Restart=always, hardened)
#   /lib/systemd/system/mailherd-signup.service
#   /usr/share/man/man1/mailherd.1.gz      `mailherd man`, from the clap CLI
#   bash, zsh and fish completions         `mailherd completions SHELL`
#   /usr/share/doc/mailherd/examples/      commented example configs
#   /etc/mailherd/                         empty: the operator's config goes here
# Usage: bash scripts/package.sh   (CARGO_TARGET_DIR is honoured)
# Environment:
#   MAILHERD_PACKAGE_BINARY=PATH  package this already-built mailherd
#       instead of making a release build (crates/cli/tests/packaging.rs
#       packages the debug build this way); its --version must match the
#       workspace's version.
#   MAILHERD_PACKAGE_OUT=DIR      where the package tree and the .deb go
#       (default: $CARGO_TARGET_DIR/debian, i.e. target/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}

for tool in "$cargo" dpkg-deb dpkg jq gzip strip objdump; do
    command -v "$tool" >/dev/null || { echo "package.sh: $tool is missing" >&2; exit 1; }
done

version=$("$cargo" metadata --no-deps --format-version 1 \
    | jq -r '.packages[] | select(.name == "mailherd") | .version')
arch=$(dpkg --print-architecture)
target=${CARGO_TARGET_DIR:-target}
out=${MAILHERD_PACKAGE_OUT:-$target/debian}

if [ -n "${MAILHERD_PACKAGE_BINARY:-}" ]; then
    binary=$MAILHERD_PACKAGE_BINARY
    [ -x "$binary" ] || { echo "package.sh: MAILHERD_PACKAGE_BINARY=$binary is not an executable file" >&2; exit 1; }
    echo "package.sh: packaging mailherd $version from $binary (no build)"
else
    echo "package.sh: building mailherd $version (release) ..."
    "$cargo" build --release --locked -p mailherd --bin mailherd
    binary="$target/release/mailherd"
fi
built=$("$binary" --version)
[ "$built" = "mailherd $version" ] \
    || { echo "package.sh: $binary says \"$built\", the workspace is at $version" >&2; exit 1; }

name="mailherd_${version}_${arch}"
install -d "$out"
root="$out/$name"
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
    "$root/usr/share/doc/mailherd/examples" "$root/etc/mailherd"

install -m 0755 "$binary" "$root/usr/bin/mailherd"
strip --strip-unneeded "$root/usr/bin/mailherd"
install -m 0644 packaging/mailherd.service packaging/mailherd-signup.service "$root/lib/systemd/system/"

# The man page and completions come from the binary being packaged.
"$root/usr/bin/mailherd" man | gzip -9n > "$root/usr/share/man/man1/mailherd.1.gz"
"$root/usr/bin/mailherd" completions bash > "$root/usr/share/bash-completion/completions/mailherd"
"$root/usr/bin/mailherd" completions zsh > "$root/usr/share/zsh/vendor-completions/_mailherd"
"$root/usr/bin/mailherd" completions fish > "$root/usr/share/fish/vendor_completions.d/mailherd.fish"

install -m 0644 examples/*.toml "$root/usr/share/doc/mailherd/examples/"
# Every example must be a config the packaged binary accepts.
for example in examples/*.toml; do
    "$root/usr/bin/mailherd" config validate "$example" >/dev/null \
        || { echo "package.sh: $example does not validate" >&2; exit 1; }
done
gzip -9n < CHANGELOG.md > "$root/usr/share/doc/mailherd/changelog.gz"
cat > "$root/usr/share/doc/mailherd/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mailherd
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

# Library dependencies (rustls and aws-lc are linked in): glibc, at the
# newest symbol version the binary uses, and libgcc_s (unwinding). Any
# other shared library the binary needs is an error here, not a package
# that installs and then fails to start.
glibc=$(objdump -T "$root/usr/bin/mailherd" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
depends="libc6 (>= $glibc)"
for library in $(objdump -p "$root/usr/bin/mailherd" | awk '$1 == "NEEDED" { print $2 }'); do
    case $library in
        libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-*.so.*) ;;
        libgcc_s.so.1) depends="$depends, libgcc-s1" ;;
        *) echo "package.sh: the binary needs $library, which package.sh does not map to a Debian package" >&2
           exit 1 ;;
    esac
done
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: mailherd
Version: $version
Architecture: $arch
Maintainer: mailherd developers <dev@mailherd.invalid>
Installed-Size: $installed_kib
Depends: $depends
Recommends: iproute2
Suggests: postfix, dovecot-imapd, docker-compose-plugin
Section: admin
Priority: optional
Homepage: https://mailherd.invalid
Description: high availability for self-hosted mail servers
 mailherd turns 3, 5 or 7 nodes (or 2 plus a witness) running
 Postfix/Dovecot or mailcow-dockerized into an active/passive cluster:
 exactly one master holds the floating IP, the shared volume and the
 running mail stack; agents agree through Raft, the master holds a lease
 and fences itself, failover takes about a second.
CONTROL

# Installing or upgrading never starts or restarts the agent: a restart
# moves the master role, so the operator does it node by node.
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "$2" ] && systemctl is-active --quiet mailherd; then
        echo "mailherd: upgraded; the running agent keeps the old version until" \
             "you run \`systemctl restart mailherd\` (one node at a time)"
    fi
fi
exit 0
POSTINST
# Removing stops the agent (it demotes cleanly, a backup takes over).
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop mailherd-signup mailherd || true
fi
exit 0
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb="$out/$name.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "package.sh: wrote $deb"
dpkg-deb --info "$deb" | sed -n 's/^ *\(Package\|Version\|Architecture\|Depends\|Installed-Size\):/  &/p'
