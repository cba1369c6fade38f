#!/bin/sh
# `make host-packages` (run by `make demo` and `make test`): the Debian/Ubuntu packages a real node and the
# image builds need — runc, the CNI plugins, iptables/nftables, buildah and debootstrap, a static libc for
# the pause image. Installed only when one is missing and this is root on a machine with apt-get; anywhere
# else it says what is missing, and the tiers that need a real node skip (and fail in CI).
set -eu
missing=""
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || missing="$missing $2"; }
need runc runc
need iptables iptables
need nft nftables
need buildah buildah
need debootstrap debootstrap
need gcc gcc
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || missing="$missing containernetworking-plugins"
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || missing="$missing libc6-dev"
[ -n "$missing" ] || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make host-packages: installing$missing (apt-get)" >&2
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
else
    echo "make host-packages: missing$missing; a real node (make demo's pods, the cluster tier's pods) needs them" >&2
fi
