#!/usr/bin/env bash
# Benchmarks netloom's drivers side by side with Docker's built-in drivers, on harness hosts
# (network namespaces with their own dockerd; nothing of the root namespace is touched).
# Prints one table, writes it as Markdown (report.md) and the scaling charts (SVG and PNG).
#
# Usage (as root): tests/bench.sh [--quick] [--only driver,footprint,attach,throughput,dns] [--out DIR]
#   --out defaults to target/netloom-bench. --quick is a smoke run of every section (a few
#   minutes); the full run takes about 15 minutes on 2 cores. Exit status 1 if a section failed.
# Not part of tests/run.sh: figures are only meaningful on an otherwise idle machine.
source "$(dirname "$0")/prelude.sh"
require_root "it creates network namespaces and starts dockerd"

tests/install-deps.sh
tests/fetch-docker26.sh
cargo build --release --workspace --bins
exec target/release/netloom-bench "$@"
