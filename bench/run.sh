#!/usr/bin/env bash
# One command for the benchmark: builds, installs pt-archiver if missing, runs bench/run.py.
# VISITS (default 2000000) and RUNS (default 3) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pt-archiver >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q percona-toolkit time
fi
cargo build --release --quiet --bin matomo-erase --bin matomo-gen
exec python3 bench/run.py
