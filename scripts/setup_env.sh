#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv: ROS 2 Jazzy from PyPI wheels,
# torch, transformers, and this package installed in editable mode. Idempotent and quick when nothing
# changed: a stamp of the requirement files decides whether pip runs at all.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SPATIALVLM_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.spatialvlm_stamp"
want="$(cat "$root/requirements-ros.txt" "$root/requirements.txt" "$root/requirements-test.txt" "$root/setup.py" "$root/setup.cfg" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements into $venv (first run: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements-ros.txt" -r "$root/requirements.txt" \
    -r "$root/requirements-test.txt" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import rclpy, torch, torchvision, transformers, spatialvlm_ros" \
    || { echo "[setup] the environment did not come up: see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
