"""Shutdown as users do it: `reward_node` as its own process under a 30 Hz camera, then Ctrl-C (SIGINT).

One SIGINT: the worker finishes its frame while the context is still up, the model is freed after it,
rclpy shuts down last; exit code 0 and no RCLError ("publisher's context is invalid") or traceback.
A second SIGINT while shutdown waits for a long model call exits at once (128 + 2).

Bad inputs tried: SIGINT while frames stream in and the model is busy; SIGINT during a model call that
takes many seconds (a random checkpoint asked for 16 samples of 1024 tokens); SIGTERM.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from ros_helpers import VENV_BIN, Probe, node_env, wait_for

from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

BAD_WORDS = ("RCLError", "context is invalid", "Traceback", "Segmentation fault", "Aborted")


class Output:
    """Reads a process's merged stdout/stderr line by line in the background."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, words: str, timeout: float) -> None:
        wait_for(lambda: any(words in line for line in self.lines), timeout, f"{words!r} in the output")

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def start_node(*params: str) -> tuple[subprocess.Popen, Output]:
    args = [str(VENV_BIN / "reward_node"), "--ros-args"]
    for p in params:
        args += ["-p", p]
    # SIGINT at its default even if this runner was started with it ignored (a background job).
    wrapper = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])"]
    proc = subprocess.Popen(wrapper + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=node_env())
    return proc, Output(proc)


class Camera30Hz:
    """Streams the demo approach at 30 Hz from this process until stopped."""

    def __init__(self, probe: Probe) -> None:
        scene = ApproachScene(frames=8)
        self.frames = [scene.render(i).rgb for i in range(scene.frames)]
        self.probe = probe
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = 1 / 30
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.sent += 1
            self.probe.send_rgb(self.frames[self.sent % len(self.frames)], 5000 + self.sent)
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture()
def camera():
    rclpy.init()
    probe = Probe("shutdown_camera")
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(probe)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    yield probe
    executor.shutdown(timeout_sec=2)
    probe.destroy_node()
    rclpy.shutdown()


def _infos(probe: Probe) -> int:
    with probe._lock:
        return len(probe.infos)


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_under_a_30hz_camera_shuts_down_cleanly(camera, sig):
    proc, out = start_node("model.name_or_path:=builtin:tiny-spatial", "model.max_new_tokens:=16",
                           "target_object:=the orange cylinder")
    try:
        out.wait_for("ready: backend=vlm", 180)
        wait_for(lambda: camera.image_pub.get_subscription_count() > 0, 30, "reward_node subscribed")
        stream = Camera30Hz(camera)
        try:
            wait_for(lambda: _infos(camera) >= 10, 60, "ten answers while frames stream in")
            proc.send_signal(sig)  # the worker is mid-frame most of the time at 30 Hz
            code = proc.wait(timeout=60)
        finally:
            stream.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text()
    assert code == 0, text
    assert f"{sig.name}: shutting down" in text, text
    for bad in BAD_WORDS:
        assert bad not in text, text


@pytest.mark.slow
def test_second_sigint_forces_exit_during_a_long_model_call(camera, tiny_qwen_dir):
    # A random checkpoint answers with up to 1024 tokens, 16 samples: one call takes seconds.
    proc, out = start_node(f"model.name_or_path:={tiny_qwen_dir}", "model.max_new_tokens:=1024",
                           "samples_per_frame:=16", "model.max_image_pixels:=4096")
    try:
        out.wait_for("ready: backend=vlm", 180)
        wait_for(lambda: camera.image_pub.get_subscription_count() > 0, 30, "reward_node subscribed")
        rgb = np.zeros((48, 64, 3), np.uint8)
        camera.send_rgb(rgb, 7)
        time.sleep(1.0)  # the worker has taken the frame and is generating
        proc.send_signal(signal.SIGINT)
        out.wait_for("waiting for the model call in progress to finish", 60)
        if proc.poll() is not None:
            pytest.skip("the model call finished before the second SIGINT could be sent")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text()
    assert code == 128 + signal.SIGINT, text
    assert "second SIGINT: exiting now" in text, text
