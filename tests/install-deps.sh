#!/usr/bin/env bash
# Installs the Debian packages netloom's build and tests need; quick when they are all present.
set -euo pipefail

packages=(
    # build
    pkg-config protobuf-compiler libprotobuf-dev libmnl-dev libnftnl-dev
    # run time
    iproute2 iptables nftables util-linux procps
    # tests: Docker 20.10 with its containerd and runc, etcd, container image and traffic tools
    docker.io containerd runc etcd-server etcd-client busybox-static iperf3 tcpdump
    # tests: certificates for the TLS stores, and the systemd units' verifier
    openssl systemd
    # the benchmark's charts
    fonts-dejavu-core
)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
