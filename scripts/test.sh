#!/usr/bin/env bash
# Sets up the venv (scripts/setup_env.sh) and runs the whole test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast tests only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh
source scripts/ros_env.sh
export HF_HUB_OFFLINE=1  # tests never touch the hub: they build their own tiny checkpoints
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
