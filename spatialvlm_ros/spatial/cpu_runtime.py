"""How torch uses the CPU in a process that must also answer services: set before torch starts.

OpenMP threads that spin after each parallel region take CPU from everything else on a shared machine
(ENVIRONMENT.md; bench/reward_pipeline.py). So, unless the user set them:

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. OpenMP reads it once, when
  torch loads it, so it is set before torch is imported (a process that imported torch earlier keeps
  what it had).
* ``model.cpu_threads`` intra-op threads when it is above 0, e.g. to leave cores to other processes;
  0 keeps ``OMP_NUM_THREADS`` or torch's own default (one per core). bench/service_latency.py measures
  both settings against service latency and the reward rate.
"""

from __future__ import annotations

import os
import sys
import threading

_configured: dict[str, object] = {}


def configure_cpu_runtime(cpu_threads: int = 0) -> dict[str, object]:
    """Apply the policy above; returns what is in effect (for the start-up log and the benches)."""
    torch_loaded = "torch" in sys.modules
    if "OMP_WAIT_POLICY" not in os.environ and not torch_loaded:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    threads = int(cpu_threads) if cpu_threads else 0
    if threads and not torch_loaded:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    _configured.update(threads=threads, wait_policy=os.environ.get("OMP_WAIT_POLICY", "(OpenMP default)"),
                       torch_loaded_before=torch_loaded)
    return dict(_configured)


def lower_thread_priority(increment: int) -> str | None:
    """Raise this thread's nice value by ``increment`` (Linux threads have their own); None or why not.

    Called by the model worker before its first model call: torch's OpenMP threads, created by the
    first parallel region, inherit it. The executor threads of the same process keep theirs, so under
    CPU contention services, parameters and shutdown get a core before the model does.
    """
    if increment <= 0:
        return None
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + int(increment))
    except (AttributeError, OSError) as exc:
        return f"cannot lower the model thread's priority: {exc}"
    return None
