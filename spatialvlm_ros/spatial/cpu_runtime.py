"""How torch uses the CPU in a process that must also answer services: set before torch starts.

Measured in bench/service_latency.py: with OpenMP's default (threads spin after each parallel region)
and one intra-op thread per core, a model working flat out left the node's own threads, and everything
else on the machine, waiting for a core, and service calls waited seconds. So, unless the user set them:

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. OpenMP reads it once, when
  torch loads it, so it is set before torch is imported (a process that imported torch earlier keeps
  what it had).
* ``model.cpu_threads`` intra-op threads (0: all cores but one, at least one), leaving a core for the
  executor, the camera callbacks and DDS.
"""

from __future__ import annotations

import os
import sys

_configured: dict[str, object] = {}


def default_cpu_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def configure_cpu_runtime(cpu_threads: int = 0) -> dict[str, object]:
    """Apply the policy above; returns what is in effect (for the start-up log and the benches)."""
    torch_loaded = "torch" in sys.modules
    if "OMP_WAIT_POLICY" not in os.environ and not torch_loaded:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    threads = int(cpu_threads) if cpu_threads else 0
    if not threads:
        user = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(user) if user.isdigit() and int(user) > 0 else default_cpu_threads()
    if not torch_loaded:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    _configured.update(threads=threads, wait_policy=os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
                       torch_loaded_before=torch_loaded)
    return dict(_configured)
