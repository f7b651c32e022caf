#!/usr/bin/env bash
# Runs every netloom test: unit tests, then the integration scenarios against real dockerd
# (Docker 20.10 from Debian and Docker 26 from Debian trixie), real netlink, firewall and etcd.
# Needs root. Installs what is missing first.
source "$(dirname "$0")/prelude.sh"
require_root "the scenarios create network namespaces and start dockerd"

tests/install-deps.sh
# Habits before the long part, failing fast: formatting (rustfmt.toml), clippy with warnings as errors.
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
tests/fetch-docker26.sh
cargo build --release --workspace --bins
# The dockerd scenarios mostly wait on the kernel and dockerd, so run more of them than there are
# cores; each builds its own namespaces and shares nothing with the others.
threads=${NETLOOM_TEST_THREADS:-4}
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --workspace --no-fail-fast --test-threads "$threads" "$@"
else
    RUST_TEST_THREADS=$threads cargo test --release --workspace --no-fail-fast "$@"
fi
