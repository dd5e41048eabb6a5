#!/usr/bin/env bash
# The test command: installs what the tests need (C toolchains, qemu, Python reference packages), then runs
# every test of the workspace. Set KILN_LONG=1 to also run the long suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
python3 scripts/make_models.py --verify
cargo test --workspace --locked
