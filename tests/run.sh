#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real processes on
# loopback, ports chosen at run time). Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
export CARGO_TERM_COLOR=never
# A clean CI build has nothing to reuse: incremental state would only fill the disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# What the disk has to build on (a link that runs out of room dies with SIGBUS, not a message).
df -h . >&2 || true
cargo fmt --all -- --check
# No cycle among the crate's top-level modules (the layout in src/lib.rs).
python3 .ci/modgraph.py src
cargo clippy --workspace --all-targets -- -D warnings
# The gateway, mock-llm and the load client (the integration tests run mock-llm).
cargo build --workspace --bins
# Benchmarks compile and run once each in test mode (criterion's quick check).
cargo test --bench hot_path
# `--tests` takes every target with tests: the libraries, the integration suite and the
# binaries' unit tests (mock-llm's); the gateway's binary has none (`test = false`).
cargo test --workspace --lib --tests -- --test-threads=2
df -h . >&2 || true
