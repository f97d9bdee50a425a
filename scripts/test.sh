#!/usr/bin/env bash
# The whole test suite: pure core, config, consensus, drivers, probes and the
# lab end-to-end tests with real agents, Postfix and Dovecot in namespaces.
# Needs root. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# Build every binary once: the lab tests start the real `mailherd` and
# `mailherd-lab` from target/debug.
cargo build --workspace --bins --locked
# A lab left over from an interrupted run would make the lab tests fail.
./target/debug/mailherd-lab down >/dev/null 2>&1 || true
cargo test --workspace --locked
