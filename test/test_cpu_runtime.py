"""OpenMP wait policy and torch threads set before torch loads (spatial/cpu_runtime.py), in fresh processes.

Bad inputs tried: a user who exported OMP_WAIT_POLICY / OMP_NUM_THREADS (their choice wins), a process
that imported torch first (the policy can no longer change; threads still can).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, os, sys
{pre}
from spatialvlm_ros.spatial.cpu_runtime import configure_cpu_runtime
info = configure_cpu_runtime({threads})
import torch
print(json.dumps({{"policy": os.environ.get("OMP_WAIT_POLICY"), "threads": torch.get_num_threads(),
                  "info_threads": info["threads"]}}))
"""


def run(threads: int = 0, pre: str = "", **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", CODE.format(threads=threads, pre=pre)], capture_output=True,
                         text=True, timeout=300, env=full)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_passive_by_default_and_the_thread_count_asked_for():
    got = run(threads=1)
    assert got == {"policy": "PASSIVE", "threads": 1, "info_threads": 1}


def test_the_users_environment_wins():
    got = run(threads=0, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert got["policy"] == "ACTIVE" and got["threads"] == 1


def test_torch_loaded_first_keeps_its_policy_but_threads_still_apply():
    got = run(threads=1, pre="import torch")
    assert got["policy"] is None and got["threads"] == 1
