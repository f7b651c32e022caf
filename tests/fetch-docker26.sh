#!/usr/bin/env bash
# Fetches Docker 26's dockerd, with the helpers it runs (docker-proxy, docker-init = tini-static),
# from Debian trixie's docker.io and tini packages into DEST, without touching the system's apt
# configuration, lists or cache and without installing anything system-wide.
#
# Usage: tests/fetch-docker26.sh [--verify] [DEST]
#   DEST defaults to ${NETLOOM_CACHE:-/var/cache/netloom-tests}/docker26.
#   Quick no-op when DEST already holds a dockerd that runs.
#   After a fresh fetch (or always, with --verify) it smoke-tests the daemon: a throwaway dockerd
#   in a new network namespace and a private mount namespace, with a container run through
#   docker-init and a port published through docker-proxy. NETLOOM_DOCKER26_VERIFY=0 skips that.
#   NETLOOM_DEBIAN_MIRROR overrides the mirror (default: the one this machine's apt sources use).
#
# Result (the package's own layout, plus bin/ with links to the three binaries):
#   DEST/usr/sbin/dockerd, DEST/usr/sbin/docker-proxy, DEST/usr/bin/docker-init -> tini-static
#   DEST/bin/{dockerd,docker-proxy,docker-init}    DEST/VERSION (package versions, mirror)
#
# How the tests start it (containerd, containerd-shim-runc-v2 and runc are bookworm's, from PATH;
# dockerd starts its own containerd under --exec-root when /run/containerd/containerd.sock is absent):
#   ip netns add NS
#   nsenter --net=/run/netns/NS -- unshare --mount --propagation private -- sh -c '
#     mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/docker/plugins && ip link set lo up &&
#     exec env -i PATH=DEST/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
#       DEST/usr/sbin/dockerd --config-file W/daemon.json --data-root W/data --exec-root W/exec \
#         -H unix://W/docker.sock --pidfile W/docker.pid \
#         --userland-proxy-path DEST/usr/sbin/docker-proxy --init-path DEST/usr/bin/docker-init'
# (W/daemon.json holds "{}" so that /etc/docker/daemon.json is never read.)
set -euo pipefail

SUITE=trixie
PACKAGES=(docker.io tini)
WANT_MAJOR=26

say() { echo "fetch-docker26: $*" >&2; }
die() { echo "fetch-docker26: ERROR: $*" >&2; exit 1; }

verify=auto
case "${1:-}" in
    --verify) verify=yes; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (usage: $0 [--verify] [DEST])" ;;
esac
[ $# -le 1 ] || die "usage: $0 [--verify] [DEST]"
DEST=${1:-${NETLOOM_CACHE:-/var/cache/netloom-tests}/docker26}
case "$DEST" in /*) ;; *) DEST="$PWD/$DEST" ;; esac
DEST=${DEST%/}
[ "$(id -u)" -eq 0 ] || die "must run as root"

for tool in apt-get apt-cache apt-config dpkg dpkg-deb flock mktemp; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# ---------------------------------------------------------------- cleanup of everything we start
WORK="" WORK_STAGE="" NS="" VW="" DAEMON_PID=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$VW" ]; then
        if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
            kill -TERM "$DAEMON_PID" 2>/dev/null
            for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$DAEMON_PID" 2>/dev/null
        fi
        # The managed containerd and the shims name the unique verify directory on their command
        # line: end exactly those, by PID.
        local pid left
        for _ in 1 2 3; do
            left=""
            for pid in $(procs_mentioning "$VW"); do kill -KILL "$pid" 2>/dev/null; left=1; done
            [ -z "$left" ] && break
            sleep 0.5
        done
        rm -rf "$VW"
    fi
    if [ -n "$NS" ] && [ -e "/run/netns/$NS" ]; then
        ip netns del "$NS" || echo "fetch-docker26: WARNING: could not delete netns $NS" >&2
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    [ -n "$WORK_STAGE" ] && rm -rf "$WORK_STAGE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PIDs (other than ours) whose command line contains $1.
procs_mentioning() {
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ] && continue
        grep -qaF -- "$1" "$d/cmdline" 2>/dev/null && echo "$pid"
    done
    return 0
}

# ---------------------------------------------------------------- is a working copy already there?
dockerd_bin() { echo "$DEST/usr/sbin/dockerd"; }
installed_ok() {
    [ -f "$DEST/.netloom-docker26" ] && [ -x "$(dockerd_bin)" ] && [ -x "$DEST/usr/sbin/docker-proxy" ] &&
        [ -x "$DEST/bin/docker-init" ] && "$(dockerd_bin)" --version >/dev/null 2>&1
}

# An existing DEST is replaced only if this script made it (or it is an empty directory).
check_dest_replaceable() {
    [ -e "$DEST" ] || return 0
    if [ -d "$DEST" ] && { [ -f "$DEST/.netloom-docker26" ] || [ -z "$(ls -A "$DEST")" ]; }; then
        return 0
    fi
    die "$DEST exists and was not made by this script; not replacing it"
}

# ---------------------------------------------------------------- the mirror this machine uses
# The archive URI of an enabled "deb" source of this release (or "stable"), from either format.
find_mirror() {
    local codename files f
    codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"' || true)
    [ -n "$codename" ] || codename=bookworm
    files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    for f in "${files[@]}"; do
        case "$f" in
        *.sources)
            awk -v cn="$codename" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled !~ /^(no|false|0)$/ && uris != "") {
                        n = split(suites, s, " ")
                        for (i = 1; i <= n; i++) if (s[i] == cn || s[i] == "stable") { split(uris, u, " "); print u[1]; break }
                    }
                    types = ""; uris = ""; suites = ""; enabled = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[^ \t]/ {
                    key = tolower($0); sub(/:.*/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/\t/, " ", val)
                    if (key == "types") types = val; else if (key == "uris") uris = val
                    else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
                }
                END { flush() }' "$f"
            ;;
        *)
            # deb [opts] uri suite comps...
            sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
                awk -v cn="$codename" '$1 == "deb" && ($3 == cn || $3 == "stable") { print $2 }'
            ;;
        esac
    done | grep -E '^(https?|mirror\+https?|file)://' | head -n1
}

# ---------------------------------------------------------------- fetch
fetch() {
    local mirror arch keyring parent stage pkg ver f
    mirror=${NETLOOM_DEBIAN_MIRROR:-$(find_mirror)}
    [ -n "$mirror" ] || die "found no Debian mirror in /etc/apt/sources.list{,.d/} (set NETLOOM_DEBIAN_MIRROR)"
    mirror=${mirror%/}
    arch=$(dpkg --print-architecture)
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || die "$keyring missing (apt-get install debian-archive-keyring)"
    say "mirror $mirror, suite $SUITE, arch $arch"

    WORK=$(mktemp -d /tmp/netloom-fetch-docker26.XXXXXX)
    chmod 0755 "$WORK"
    mkdir -p "$WORK/etc" "$WORK/state/lists/partial" "$WORK/cache/archives/partial" "$WORK/log" "$WORK/debs"
    : >"$WORK/state/status"
    chown _apt "$WORK/debs" 2>/dev/null || true   # lets apt download unprivileged, as it prefers

    cat >"$WORK/etc/$SUITE.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE
Components: main
Architectures: $arch
Signed-By: $keyring
EOF
    # A private apt.conf read *instead of* /etc/apt/apt.conf{,.d}: those run hooks after every
    # update (cache cleaning, PackageKit, appstream) and add index targets we do not want. Only
    # the system's Acquire settings (proxies, date checks, compression) are carried over.
    {
        apt-config dump | grep -E '^Acquire::' | grep -v -E '^Acquire::IndexTargets' || true
        cat <<EOF
Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "/dev/null";
Dir::Etc::SourceList "$WORK/etc/$SUITE.sources";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::State "$WORK/state";
Dir::State::Lists "$WORK/state/lists";
Dir::State::status "$WORK/state/status";
Dir::Cache "$WORK/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Log "$WORK/log";
APT::Architectures { "$arch"; };
EOF
    } >"$WORK/etc/apt.conf"
    export APT_CONFIG="$WORK/etc/apt.conf"
    local -a opts=(
        -o "Dir::Etc::SourceList=$WORK/etc/$SUITE.sources" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$WORK/state/lists" -o "Dir::State::status=$WORK/state/status"
        -o "Dir::Cache=$WORK/cache"
    )

    say "apt-get update ($SUITE lists into $WORK)"
    apt-get "${opts[@]}" -q --error-on=any update >"$WORK/update.log" 2>&1 ||
        { cat "$WORK/update.log" >&2; die "apt-get update of $SUITE failed"; }

    local -a specs=()
    for pkg in "${PACKAGES[@]}"; do
        ver=$(apt-cache "${opts[@]}" policy "$pkg" | awk '$1 == "Candidate:" { print $2 }')
        if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then die "$SUITE has no $pkg for $arch"; fi
        say "$SUITE ships $pkg $ver"
        specs+=("$pkg=$ver")
    done
    local dver=${specs[0]#docker.io=}
    case "$dver" in
        "$WANT_MAJOR".*) ;;
        *) say "WARNING: $SUITE ships docker.io $dver, not Docker $WANT_MAJOR.x; fetching it anyway" ;;
    esac

    (cd "$WORK/debs" && apt-get "${opts[@]}" -q download "${specs[@]}") >"$WORK/download.log" 2>&1 ||
        { cat "$WORK/download.log" >&2; die "apt-get download ${specs[*]} failed"; }

    parent=$(dirname "$DEST")
    mkdir -p "$parent"
    stage=$(mktemp -d "$parent/.docker26.XXXXXX")
    WORK_STAGE="$stage"   # removed by cleanup unless it becomes DEST
    for f in "$WORK"/debs/*.deb; do
        [ -f "$f" ] || die "apt-get download produced no .deb"
        dpkg-deb -x "$f" "$stage"
    done
    [ -f "$stage/usr/sbin/dockerd" ] ||
        die "docker.io $dver has no usr/sbin/dockerd; it has: $(cd "$stage" && find . -name 'dockerd*' | tr '\n' ' ')"
    [ -f "$stage/usr/sbin/docker-proxy" ] || die "docker.io $dver has no usr/sbin/docker-proxy"
    [ -e "$stage/usr/bin/docker-init" ] || die "docker-init missing (docker.io's usr/bin/docker-init -> tini-static from tini)"
    mkdir -p "$stage/bin"
    ln -s ../usr/sbin/dockerd "$stage/bin/dockerd"
    ln -s ../usr/sbin/docker-proxy "$stage/bin/docker-proxy"
    ln -s ../usr/bin/docker-init "$stage/bin/docker-init"
    "$stage/usr/sbin/dockerd" --version >/dev/null || die "the fetched dockerd does not run here"
    "$stage/bin/docker-init" --version >/dev/null || die "the fetched docker-init does not run here"
    {
        printf 'suite=%s\nmirror=%s\n' "$SUITE" "$mirror"
        printf '%s\n' "${specs[@]}"
        "$stage/usr/sbin/dockerd" --version
    } >"$stage/VERSION"
    : >"$stage/.netloom-docker26"
    chmod 0755 "$stage"

    check_dest_replaceable
    rm -rf "$DEST"
    mv "$stage" "$DEST"
    WORK_STAGE=""
}

# ---------------------------------------------------------------- verify in a throwaway netns
verify_daemon() {
    local docker dockerd bb port=18080 i ver want out
    for tool in ip nsenter unshare mount containerd containerd-shim-runc-v2 runc iptables; do
        command -v "$tool" >/dev/null || die "verify: $tool not found (tests/install-deps.sh installs it)"
    done
    docker=$(command -v docker) || die "verify: no docker CLI found"
    dockerd="$DEST/usr/sbin/dockerd"
    want=$("$dockerd" --version | sed -n 's/^Docker version \([^,]*\),.*/\1/p')

    NS="nl-d26v-$$"
    VW=$(mktemp -d /tmp/nl-d26v.XXXXXX)   # short: socket paths must stay under 108 bytes
    echo '{}' >"$VW/daemon.json"
    ip netns add "$NS"
    say "verify: dockerd $want in netns $NS, state in $VW"

    # shellcheck disable=SC2016
    nsenter --net="/run/netns/$NS" -- unshare --mount --propagation private -- /bin/sh -c '
        set -e
        mount -t tmpfs -o mode=0755 tmpfs /run
        mkdir -p /run/docker/plugins
        ip link set lo up
        exec env -i PATH="$1/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            "$1/usr/sbin/dockerd" --config-file "$2/daemon.json" \
            --data-root "$2/data" --exec-root "$2/exec" \
            -H "unix://$2/docker.sock" --pidfile "$2/docker.pid" \
            --userland-proxy-path "$1/usr/sbin/docker-proxy" --init-path "$1/usr/bin/docker-init"
    ' sh "$DEST" "$VW" >"$VW/dockerd.log" 2>&1 &
    DAEMON_PID=$!

    d() { timeout 60 env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY "$docker" -H "unix://$VW/docker.sock" "$@"; }
    fail() { echo "---- dockerd log (last 40 lines)" >&2; tail -n 40 "$VW/dockerd.log" >&2; die "verify: $*"; }

    for i in $(seq 1 120); do
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "dockerd exited during start-up"
        [ -S "$VW/docker.sock" ] && d version >/dev/null 2>&1 && break
        [ "$i" -eq 120 ] && fail "dockerd did not answer within 60 s"
        sleep 0.5
    done
    ver=$(d version --format '{{.Server.Version}}')
    [ "$ver" = "$want" ] || fail "server reports version '$ver', expected '$want'"
    say "verify: server version $ver ($(d version --format 'API {{.Server.APIVersion}}, containerd {{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}}'))"
    nsenter --net="/run/netns/$NS" ip link show docker0 >/dev/null 2>&1 || fail "no docker0 inside the netns"

    bb=/bin/busybox
    if [ -x "$bb" ] && { LC_ALL=C ldd "$bb" 2>&1 || true; } | grep -q 'not a dynamic'; then
        mkdir -p "$VW/img/bin" "$VW/img/www"
        cp "$bb" "$VW/img/bin/busybox"
        for i in sh cat httpd; do ln -s busybox "$VW/img/bin/$i"; done
        echo netloom-docker26-ok >"$VW/img/www/index.html"
        tar -C "$VW/img" -c . | d import - netloom-verify:bb >/dev/null || fail "docker import"
        out=$(d run --rm --init netloom-verify:bb cat /proc/1/cmdline | tr '\0' ' ') || fail "docker run --init"
        case "$out" in *docker-init*) ;; *) fail "pid 1 was '$out', not docker-init" ;; esac
        d run -d --name netloom-verify-web -p "127.0.0.1:$port:80" netloom-verify:bb httpd -f -p 80 -h /www >/dev/null ||
            fail "docker run -p"
        out=""
        for i in $(seq 1 20); do
            out=$(timeout 5 nsenter --net="/run/netns/$NS" "$bb" wget -q -O - "http://127.0.0.1:$port/" 2>/dev/null) && break
            sleep 0.5
        done
        if [ "$out" != netloom-docker26-ok ]; then
            d ps -a >&2 || true
            d logs netloom-verify-web >&2 || true
            fail "published port 127.0.0.1:$port did not answer through docker-proxy"
        fi
        [ -n "$(procs_mentioning "$DEST/usr/sbin/docker-proxy")" ] || fail "no docker-proxy from $DEST running"
        d rm -f netloom-verify-web >/dev/null || fail "docker rm"
        say "verify: container ran under docker-init; published port answered through $DEST/usr/sbin/docker-proxy"
    else
        say "verify: no static /bin/busybox (busybox-static), skipping the container checks"
    fi

    # Stop it here, not only in cleanup, to check that it goes cleanly.
    kill -TERM "$DAEMON_PID"
    for i in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$DAEMON_PID" 2>/dev/null && fail "dockerd did not stop within 20 s of SIGTERM"
    wait "$DAEMON_PID" || true
    DAEMON_PID=""
    for i in $(seq 1 20); do [ -n "$(procs_mentioning "$VW")" ] || break; sleep 0.5; done
    if [ -n "$(procs_mentioning "$VW")" ]; then
        say "WARNING: left after dockerd stopped (cleanup ends them): $(procs_mentioning "$VW" | tr '\n' ' ')"
    fi
    say "verify: OK"
}

# ---------------------------------------------------------------- main
mkdir -p "$(dirname "$DEST")"
exec 9>"$DEST.lock"
flock 9

fresh=no
if installed_ok; then
    [ "$verify" = yes ] || { dockerd_bin; exit 0; }
else
    check_dest_replaceable
    fetch
    installed_ok || die "fetched, but $(dockerd_bin) does not run"
    fresh=yes
fi
say "$("$(dockerd_bin)" --version) at $(dockerd_bin)"

if [ "$verify" = yes ] || { [ "$fresh" = yes ] && [ "${NETLOOM_DOCKER26_VERIFY:-1}" != 0 ]; }; then
    verify_daemon
fi
dockerd_bin
