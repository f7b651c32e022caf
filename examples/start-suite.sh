#!/usr/bin/env bash
# Builds netloom and serves every driver on this host with the embedded store.
# Logs go to the terminal; Ctrl-C (or SIGTERM) stops every driver cleanly.
source "$(dirname "$0")/../tests/prelude.sh"
require_root "drivers serve /run/docker/plugins and program the kernel"

cargo build --release --bins
bin_dir=target/release
drivers=(loom-null loom-host loom-bridge loom-overlay loom-macvlan loom-ipam)

pids=()
stop_all() {
    trap - INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    exit 0
}
trap stop_all INT TERM

for driver in "${drivers[@]}"; do
    [ -x "$bin_dir/$driver" ] || continue
    # loom-overlay needs a shared store and is started by hand (see README).
    [ "$driver" = loom-overlay ] && [ -z "${NETLOOM_STORE:-}" ] && continue
    extra=()
    [ -n "${NETLOOM_STORE:-}" ] && extra+=(--store "$NETLOOM_STORE")
    "$bin_dir/$driver" "${extra[@]}" > >(sed -u "s/^/[$driver] /") 2>&1 &
    pids+=("$!")
    echo "started $driver on /run/docker/plugins/$driver.sock"
done
wait
