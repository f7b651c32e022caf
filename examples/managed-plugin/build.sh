#!/bin/sh
# Writes a Docker managed-plugin bundle for one netloom driver:
#
#   examples/managed-plugin/build.sh DRIVER DIR
#   docker plugin create netloom/DRIVER DIR
#   docker plugin enable netloom/DRIVER
#   docker network create -d netloom/DRIVER ...
#
# DIR/config.json describes the plugin to Docker, DIR/rootfs holds what the driver runs with: its
# release binary (built when missing), the shared libraries it and the iptables binaries it
# spawns link against, busybox for the start script, and the few /etc files they read. Nothing is
# fetched: everything comes from this workspace and this machine's Debian packages (busybox-static,
# iptables).
#
# Environment: NETLOOM_BIN_DIR (where the release binaries are, default <workspace>/target/release),
# PLUGIN_NAME (the name the plugin will be created under, default netloom/DRIVER:latest; the driver
# finds its networks in Docker by it).
set -eu

usage() {
    echo "usage: $0 loom-bridge|loom-overlay|loom-host|loom-macvlan|loom-null|loom-ipam DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
driver=$1
dir=$2
case "$driver" in
    loom-bridge | loom-overlay | loom-host | loom-macvlan | loom-null | loom-ipam) ;;
    *) usage ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../.." && pwd)
bin_dir=${NETLOOM_BIN_DIR:-$workspace/target/release}
plugin_name=${PLUGIN_NAME:-netloom/$driver:latest}

if [ ! -x "$bin_dir/$driver" ]; then
    echo "building $driver (release)" >&2
    (cd "$workspace" && cargo build --release --bin "$driver")
fi

# busybox-static's busybox runs the start script (it must need no shared library).
busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "a static busybox is needed at $busybox (Debian: apt-get install busybox-static)" >&2
    exit 1
fi
xtables=$(readlink -f "$(command -v iptables || echo /usr/sbin/iptables)")
if [ ! -x "$xtables" ]; then
    echo "iptables is needed (Debian: apt-get install iptables): the firewall module runs it" >&2
    exit 1
fi
case "$xtables" in
    *xtables-nft-multi) variant=nft ;;
    *xtables-legacy-multi) variant=legacy ;;
    *)
        echo "unknown iptables variant $xtables (expected xtables-nft-multi or xtables-legacy-multi)" >&2
        exit 1
        ;;
esac

rm -rf "$dir/rootfs"
mkdir -p "$dir/rootfs"
root=$(cd "$dir/rootfs" && pwd)

# Copies a file to the same path under the rootfs (following symlinks for the content).
put() {
    mkdir -p "$root$(dirname "$2")"
    cp -L "$1" "$root$2"
}

# Copies the shared libraries an ELF file needs (as the dynamic loader resolves them here).
put_libs() {
    ldd "$1" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }' | while read -r lib; do
        [ -e "$root$lib" ] || put "$lib" "$lib"
    done
}

for d in bin sbin usr/bin usr/sbin etc run tmp proc sys dev var/lib/netloom netloom; do
    mkdir -p "$root/$d"
done
ln -s ../run "$root/var/run"
chmod 1777 "$root/tmp"

# The driver, without debug sections (the plugin's rootfs is copied by Docker on create).
put "$bin_dir/$driver" "/usr/bin/$driver"
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$root/usr/bin/$driver"
fi
put_libs "$bin_dir/$driver"

put "$busybox" /bin/busybox
for applet in sh mount cat; do
    ln -s busybox "$root/bin/$applet"
done

# iptables: the iptables backend and the FORWARD compat rule of every backend spawn it. The
# bundle carries the variant this machine uses, so the plugin and dockerd write the same tables.
put "$xtables" "/usr/sbin/$(basename "$xtables")"
put_libs "$xtables"
for tool in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
    ln -s "$(basename "$xtables")" "$root/usr/sbin/$tool"
done
# Extensions (matches, targets) are loaded from the directory libxtables was built with.
multiarch=$(dirname "$(readlink -f "$(ldd "$xtables" | awk '/libxtables/ { print $3 }')")")
for ext_dir in "$multiarch/xtables" /usr/lib/xtables /usr/lib64/xtables; do
    if [ -d "$ext_dir" ] && [ ! -d "$root$ext_dir" ]; then
        mkdir -p "$root$ext_dir"
        cp -a "$ext_dir/." "$root$ext_dir/"
        for ext in "$ext_dir"/*.so; do
            [ -e "$ext" ] && put_libs "$ext"
        done
    fi
done
for f in /etc/protocols /etc/services /etc/ethertypes; do
    [ -e "$f" ] && put "$f" "$f"
done
printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

# The start script: Docker mounts /proc/sys read-only in a plugin, and the drivers set per-link
# knobs (route_localnet on a bridge, forwarding, proxy ARP) in the host's namespace.
cat >"$root/netloom/start" <<EOF
#!/bin/sh
if ! mount -o remount,rw /proc/sys 2>/dev/null; then
    echo "netloom: cannot make /proc/sys writable (the plugin needs CAP_SYS_ADMIN); kernel knobs may fail" >&2
fi
# LOOM_ARGS: this driver's own flags (docker plugin set $plugin_name LOOM_ARGS="...").
# shellcheck disable=SC2086
exec /usr/bin/$driver \$LOOM_ARGS
EOF
chmod 0755 "$root/netloom/start"

# ---- config.json -----------------------------------------------------------------------------
types='"docker.networkdriver/1.0"'
[ "$driver" = loom-ipam ] && types='"docker.ipamdriver/1.0"'

loom_args=""
extra_mounts=""
devices=""
case "$driver" in
    loom-overlay)
        # The driver learns each container's addresses from its namespace at Join, a file under
        # dockerd's exec root (/var/run/docker/netns/<id>). The netns directory itself appears
        # only with the first container, so the whole exec root is mounted; slave propagation
        # brings in the namespaces dockerd binds later.
        extra_mounts=',
    {
      "name": "docker-exec-root",
      "description": "dockerd'"'"'s exec root (--exec-root), for the containers'"'"' network namespaces",
      "source": "/var/run/docker",
      "destination": "/run/docker",
      "type": "bind",
      "options": ["rbind", "rslave"],
      "settable": ["source"]
    }'
        # Its per-network namespaces are bound inside the plugin's own mount namespace: stopping
        # the plugin (disable -f) with networks in use deletes them, and their containers lose
        # the overlay interface. Remove loom-overlay networks before disabling the plugin.
        devices='{ "name": "tun", "description": "userspace WireGuard of encrypted networks", "path": "/dev/net/tun", "settable": ["path"] }'
        loom_args="--advertise-addr eth0"
        ;;
esac

cat >"$dir/config.json" <<EOF
{
  "description": "netloom $driver: Docker network driver (https://github.com/netloom)",
  "documentation": "examples/managed-plugin in the netloom sources",
  "interface": {
    "types": [$types],
    "socket": "$driver.sock"
  },
  "entrypoint": ["/netloom/start"],
  "workdir": "/",
  "network": { "type": "host" },
  "linux": {
    "capabilities": ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"],
    "allowAllDevices": false,
    "devices": [$devices]
  },
  "mounts": [
    {
      "name": "docker-socket",
      "description": "dockerd's Engine API: the driver removes what Docker no longer has",
      "source": "/var/run/docker.sock",
      "destination": "/run/docker.sock",
      "type": "bind",
      "options": ["rbind", "rw"],
      "settable": ["source"]
    }$extra_mounts
  ],
  "env": [
    { "name": "NETLOOM_STORE", "description": "etcd://h1:2379,h2:2379 or consul://host:8500; empty: the embedded store inside the plugin", "settable": ["value"], "value": "" },
    { "name": "NETLOOM_LOG", "description": "error|warn|info|debug|trace or a tracing filter", "settable": ["value"], "value": "info" },
    { "name": "NETLOOM_METRICS_ADDR", "description": "HOST:PORT for Prometheus metrics; empty: off", "settable": ["value"], "value": "" },
    { "name": "NETLOOM_DOCKER_HOST", "description": "dockerd's Engine API as the plugin sees it; none: no reconciliation", "settable": ["value"], "value": "unix:///run/docker.sock" },
    { "name": "NETLOOM_DOCKER_DRIVER_NAME", "description": "the name Docker knows this driver by (the plugin's name)", "settable": ["value"], "value": "$plugin_name" },
    { "name": "NO_COLOR", "description": "plain log lines (dockerd logs them with the plugin id)", "settable": ["value"], "value": "1" },
    { "name": "LOOM_ARGS", "description": "$driver's own flags, e.g. --firewall nftables", "settable": ["value"], "value": "$loom_args" }
  ]
}
EOF

echo "$dir: $driver bundle ($(du -sh "$root" | cut -f1), iptables-$variant); next: docker plugin create $plugin_name $dir" >&2
