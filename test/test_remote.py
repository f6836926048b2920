"""model.backend remote against a REAL OpenAI-compatible server: `transformers serve` on the shipped tiny
spatial model (one process per test session, on a free 127.0.0.1 port; test/model_server.py).

Parity with the in-process estimator on the demo camera's frames (greedy, PNG); samples through per-sample
seeds (transformers serve ignores `n`); the failures a robot meets: nothing listening on the port, a
request that times out, a request the server rejects (422), a wrong model id, base URL or key variable,
the server killed in the middle of a run and restarted; and reward_node with backend remote over real
topics, with its /diagnostics turning WARN while the server is away.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import threading
import time

import numpy as np
import pytest
from model_server import free_port
from PIL import Image as PILImage

from spatialvlm_ros.spatial.affordance import GapQuery, gap_answer_from_estimates, gap_queries
from spatialvlm_ros.spatial.cross_check import cross_check_config
from spatialvlm_ros.spatial.estimator import Frame, ModelConfig, ModelLoadError, build_estimator
from spatialvlm_ros.spatial.imaging import resize_max_pixels
from spatialvlm_ros.spatial.questions import DEFAULT_DISTANCE_TEMPLATE, distance_query
from spatialvlm_ros.spatial.remote import encode_image
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

N_FRAMES = 8


@pytest.fixture(scope="module")
def scene() -> ApproachScene:
    return ApproachScene(640, 480, frames=N_FRAMES)


@pytest.fixture(scope="module")
def frames(scene) -> list[Frame]:
    return [Frame(scene.render(i).rgb) for i in range(N_FRAMES)]


@pytest.fixture(scope="module")
def query(scene):
    return distance_query(DEFAULT_DISTANCE_TEMPLATE, "the robot gripper", scene.target_description)


def remote_config(server, **kw) -> ModelConfig:
    values = {"backend": "remote", "name_or_path": server.model_id, "base_url": server.base_url,
              "max_new_tokens": 16, **kw}
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def in_process():
    estimator = build_estimator(ModelConfig(name_or_path="builtin:tiny-spatial", device="cpu", max_new_tokens=16))
    yield estimator
    estimator.close()


def test_greedy_png_answers_equal_the_in_process_estimator(model_server, in_process, frames, query) -> None:
    """The same chat, the same resized pixels: the server's greedy answers are the in-process ones, frame
    by frame (requests two at a time, answers back in order)."""
    remote = build_estimator(remote_config(model_server, max_in_flight=2))
    try:
        got = remote.estimate([(f, query) for f in frames])
        want = in_process.estimate([(f, query) for f in frames])
    finally:
        remote.close()
    assert [e.raw_answers for e in got] == [e.raw_answers for e in want]
    assert [e.value_m for e in got] == [e.value_m for e in want]
    assert all(e.value_m is not None for e in got), [e.raw_answers for e in got]
    assert remote.problem is None and remote.requests == N_FRAMES


def test_the_frame_travels_resized_and_lossless_as_png(frames) -> None:
    rgb = frames[0].rgb
    for max_pixels, shape in ((0, (480, 640, 3)), (20_000, resize_max_pixels(rgb, 20_000).shape)):
        url = encode_image(rgb, max_pixels, "png")
        assert url.startswith("data:image/png;base64,")
        decoded = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        assert decoded.shape == shape
        assert np.array_equal(decoded, resize_max_pixels(rgb, max_pixels))
    jpeg = encode_image(rgb, 0, "jpeg")
    assert jpeg.startswith("data:image/jpeg;base64,")
    decoded = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(jpeg.split(",", 1)[1]))))
    error = np.abs(decoded.astype(int) - rgb.astype(int))
    assert decoded.shape == rgb.shape and error.max() > 0 and error.mean() < 3  # lossy, close


def test_jpeg_frames_are_answered_too(model_server, frames, query) -> None:
    remote = build_estimator(remote_config(model_server, image_format="jpeg"))
    try:
        (estimate,) = remote.estimate([(frames[2], query)])
    finally:
        remote.close()
    assert estimate.raw_answers and (estimate.value_m is not None) == (estimate.reason is None)


def test_samples_fall_back_to_per_sample_seeds_and_are_reproducible(model_server, frames, query) -> None:
    """transformers serve returns one choice whatever `n` says: the other samples are asked with seeds
    seed+1, seed+2; sampling needs its generation_config field (model.extra_body). Same seeds, same answers."""
    extra = '{"generation_config": "{\\"do_sample\\": true}"}'
    remote = build_estimator(remote_config(model_server, extra_body=extra, temperature=1.5, seed=7))
    try:
        first = remote.estimate([(frames[3], query)], samples=4)[0]
        assert remote._n_honoured is False and remote.requests == 4  # 1 with n=4, then 3 seeded
        again = remote.estimate([(frames[3], query)], samples=4)[0]
        assert remote.requests == 8  # asked per seed straight away now
    finally:
        remote.close()
    assert len(first.raw_answers) == 4 and len(first.sample_values_m) == 4
    assert first.raw_answers == again.raw_answers
    numbers = [v for v in first.sample_values_m if v is not None]
    assert first.value_m == pytest.approx(float(np.median(numbers)))


def test_gap_questions_in_both_orders_through_the_server(model_server, in_process, frames) -> None:
    """The affordance chain on the remote backend: both object orders in flight together, the same
    answer as in process."""
    gap = GapQuery("g1", "the orange cylinder", "the blue cylinder", 0.3, 0.05)
    questions = gap_queries(gap)
    remote = build_estimator(remote_config(model_server, max_in_flight=2))
    try:
        got = gap_answer_from_estimates(gap, remote.estimate([(frames[0], q) for q in questions]))
    finally:
        remote.close()
    want = gap_answer_from_estimates(gap, in_process.estimate([(frames[0], q) for q in questions]))
    assert got.to_dict() == want.to_dict()


def test_cross_check_of_a_remote_vlm_is_the_geometry() -> None:
    config = ModelConfig(backend="remote")
    assert cross_check_config(config).backend == "geometric"


# ---------------------------------------------------------------------------------------------
# Failures: every one a frame without a number, with the reason; the estimator goes on.


def test_nothing_listening_warns_at_start_and_answers_without_a_number(frames, query, caplog) -> None:
    config = ModelConfig(backend="remote", name_or_path="some-model", base_url=f"http://127.0.0.1:{free_port()}/v1")
    remote = build_estimator(config)  # a robot may boot before its GPU box: only a warning
    try:
        assert "cannot reach" in (remote.problem or "")
        (estimate,) = remote.estimate([(frames[0], query)])
        assert estimate.value_m is None and estimate.reason.startswith("model failed: cannot reach")
        assert "2 request(s) failed in a row" in remote.problem
    finally:
        remote.close()
    with pytest.raises(ModelLoadError, match="cannot reach"):
        build_estimator(config, require_server=True)  # a batch job: an error at once


def test_a_request_that_times_out(model_server, frames, query) -> None:
    remote = build_estimator(remote_config(model_server, timeout_s=0.001, max_image_pixels=0))
    try:
        (estimate,) = remote.estimate([(frames[1], query)])
    finally:
        remote.close()
    assert estimate.value_m is None
    assert "did not answer within 0.001 s (model.timeout_s)" in estimate.reason


def test_a_request_the_server_rejects(model_server, frames, query) -> None:
    """transformers serve refuses trust_remote_code in a request's generation_config with 422."""
    extra = '{"generation_config": "{\\"trust_remote_code\\": true}"}'
    remote = build_estimator(remote_config(model_server, extra_body=extra))
    try:
        (estimate,) = remote.estimate([(frames[1], query)])
        assert estimate.value_m is None and "rejected the request (422" in estimate.reason
        assert remote.problem is not None
    finally:
        remote.close()


def test_configuration_errors_stop_at_start_up_with_what_to_do(model_server, monkeypatch) -> None:
    with pytest.raises(ModelLoadError, match="does not serve 'Qwen/Qwen2.5-VL-7B-Instruct'; it serves: .*tiny"):
        build_estimator(remote_config(model_server, name_or_path="Qwen/Qwen2.5-VL-7B-Instruct"))
    with pytest.raises(ModelLoadError, match="usually ends in /v1"):
        build_estimator(remote_config(model_server, base_url=model_server.base_url[:-len("/v1")]))
    monkeypatch.delenv("SPATIALVLM_TEST_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="'SPATIALVLM_TEST_KEY', but it is not set"):
        build_estimator(remote_config(model_server, api_key_env="SPATIALVLM_TEST_KEY"))
    monkeypatch.setenv("SPATIALVLM_TEST_KEY", "secret-not-checked-by-this-server")
    build_estimator(remote_config(model_server, api_key_env="SPATIALVLM_TEST_KEY")).close()
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(ValueError, match="model.extra_body"):
            remote_config(model_server, extra_body=bad)
    with pytest.raises(ValueError, match="model.base_url"):
        ModelConfig(backend="remote", base_url="gpu-box:8000")


class DeadEngineHandler(http.server.BaseHTTPRequestHandler):
    """A live HTTP front end whose model process has died: 503 on every request (as the issue measured
    for `transformers serve` with a killed engine). A real server on a real port, not a built error."""

    def _dead(self) -> None:
        body = json.dumps({"detail": "model process is not running"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dead()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._dead()

    def log_message(self, *args) -> None:
        pass


def test_a_dead_engine_behind_a_live_api_is_named(frames, query) -> None:
    """503 on every request: a batch job stops at start with the reason; a node's estimator starts,
    answers each frame with no number and a reason that names the engine, and counts the failures."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DeadEngineHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    config = ModelConfig(backend="remote", name_or_path="m", base_url=url, max_new_tokens=16)
    try:
        with pytest.raises(ModelLoadError, match=r"unavailable \(503: model process is not running\); its "
                                                 "engine may be down"):
            build_estimator(config, require_server=True)
        remote = build_estimator(config)  # a robot's node: starts anyway, and says why there is no number
        try:
            (estimate,) = remote.estimate([(frames[0], query)])
            assert estimate.value_m is None
            assert "unavailable (503: model process is not running); its engine may be down" in estimate.reason
        finally:
            remote.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_server_killed_mid_run_and_restarted(model_server, frames, query) -> None:
    """SIGKILL while frames are being answered: the frames after it get no number and the reason, the
    estimator keeps going, and once the server is back the next frames are answered again."""
    remote = build_estimator(remote_config(model_server, timeout_s=5.0))
    results: list = []
    answered_one = threading.Event()

    def run() -> None:
        for i in range(40):  # bounded: at most 40 requests
            (estimate,) = remote.estimate([(frames[i % N_FRAMES], query)])
            results.append(estimate)
            answered_one.set()
            if estimate.value_m is None and len(results) > 2:
                break
            time.sleep(0.05)

    worker = threading.Thread(target=run)
    try:
        worker.start()
        assert answered_one.wait(60)
        model_server.kill()
        worker.join(120)
        assert not worker.is_alive()
        assert results[0].value_m is not None
        failed = [e for e in results if e.value_m is None]
        assert failed and all(e.reason.startswith("model failed:") for e in failed), [e.reason for e in failed]
        assert remote.problem is not None
        model_server.start()
        (estimate,) = remote.estimate([(frames[0], query)])
        assert estimate.value_m is not None and remote.problem is None
    finally:
        remote.close()
        if not model_server.healthy():
            model_server.start()


# ---------------------------------------------------------------------------------------------
# reward_node with model.backend remote, over real topics




def remote_reward_node(scene, base_url: str, model_id: str, **extra):
    from rclpy.parameter import Parameter

    from spatialvlm_ros.reward_node import RewardNode

    values = {"model.backend": "remote", "model.base_url": base_url, "model.name_or_path": model_id,
              "model.max_new_tokens": 16, "target_object": scene.target_description,
              "diagnostics_period_s": 0.2, **extra}
    return RewardNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def test_reward_node_with_a_remote_backend_over_real_topics(ros, model_server, in_process, scene, query) -> None:
    """Frames in on `image`, rewards out on `reward`/`reward_info`: the distances the server gives are the
    in-process model's, with two frames in flight (model.max_in_flight 2: two worker threads)."""
    from ros_helpers import Probe, Spinner, wait_for

    node = remote_reward_node(scene, model_server.base_url, model_server.model_id, **{"model.max_in_flight": 2})
    probe = Probe("remote_probe")
    spinner = Spinner(node, probe)
    try:
        assert len(node._workers) == 2
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="reward node subscribed")
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
        rgbs = {100 + i: scene.render(i).rgb for i in (0, 4, 7)}
        for sec, rgb in rgbs.items():
            probe.send_rgb(rgb, sec)
            wait_for(lambda sec=sec: probe.info_for(sec) is not None, 60, f"reward_info of {sec}")
        for sec, rgb in rgbs.items():
            info = probe.info_for(sec)
            (want,) = in_process.estimate([(Frame(rgb), query)])
            assert info["backend"] == "remote" and info["model"] == model_server.model_id
            assert info["raw_answers"] == want.raw_answers and info["raw_distance_m"] == want.value_m
            assert info["reward"] == pytest.approx(-want.value_m) and info["error"] is None
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        probe.destroy_node()


def test_reward_node_keeps_running_while_the_server_is_away(ros, scene) -> None:
    """Nothing listens at model.base_url: the node starts anyway (a robot may boot before its GPU box), each
    frame gets reward_info with the reason and no reward, /diagnostics says WARN and why, reset answers."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from ros_helpers import Probe, Spinner, wait_for
    from std_srvs.srv import Trigger

    node = remote_reward_node(scene, f"http://127.0.0.1:{free_port()}/v1", "Qwen/Qwen2.5-VL-7B-Instruct")
    probe = Probe("away_probe")
    statuses: list = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
    reset = probe.create_client(Trigger, "reset")
    spinner = Spinner(node, probe)
    try:
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="reward node subscribed")
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
        probe.send_rgb(scene.render(0).rgb, 300)
        wait_for(lambda: probe.info_for(300) is not None, 30, "reward_info of the frame")
        info = probe.info_for(300)
        assert info["reward"] is None and info["error"].startswith("model failed: cannot reach the model server")
        assert probe.rewards == []

        def warned() -> bool:
            return any(s.level == DiagnosticStatus.WARN and "cannot reach" in s.message
                       and "reward" in s.name for s in list(statuses))

        wait_for(warned, 10, "a WARN on /diagnostics naming the unreachable server")
        wait_for(reset.service_is_ready, what="reset service")
        future = reset.call_async(Trigger.Request())
        wait_for(future.done, 10, "reset answered")
        assert future.result().success
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        probe.destroy_node()


def test_the_remote_backend_loads_neither_torch_nor_transformers() -> None:
    """What the README promises a robot without a GPU: the nodes with backend remote need the openai
    client only (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import spatialvlm_ros.reward_node, spatialvlm_ros.affordance_node\n"
            "from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator\n"
            f"e = build_estimator(ModelConfig(backend='remote', base_url='http://127.0.0.1:{free_port()}/v1'))\n"
            "e.close()\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@contextlib.contextmanager
def affordance_node_on(values: dict, name: str, scene, sec: int):
    """An AffordanceNode with ``values``, a probe that has sent it frame ``sec`` of ``scene``, and a caller
    node with a ready check_gap client and the /diagnostics statuses it heard; all spinning."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from ros_helpers import Probe, Spinner, wait_for
    from std_srvs.srv import Trigger

    from spatialvlm_ros.affordance_node import AffordanceNode

    node = AffordanceNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    probe = Probe(f"{name}_probe")
    caller = Node(f"{name}_caller")
    check_gap = caller.create_client(Trigger, "check_gap")
    statuses: list = []
    caller.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10)
    spinner = Spinner(node, probe, caller)
    try:
        wait_for(lambda: probe.image_pub.get_subscription_count() > 0, what="affordance node subscribed")
        rgb = scene.render(sec % N_FRAMES).rgb
        probe.send_rgb(rgb, sec)
        wait_for(lambda: node.newest_frame() is not None, 10, "the frame")
        wait_for(check_gap.service_is_ready, what="check_gap")
        yield rgb, check_gap, statuses
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        probe.destroy_node()
        caller.destroy_node()


def call_check_gap(client, timeout: float):
    from ros_helpers import wait_for
    from std_srvs.srv import Trigger

    future = client.call_async(Trigger.Request())
    wait_for(future.done, timeout, "check_gap answered")
    return future.result()


def test_affordance_node_with_a_remote_backend_answers_check_gap_as_in_process(ros, model_server, in_process,
                                                                               scene) -> None:
    """check_gap over a real service on a frame from a real topic, the model behind the live server: the
    answer (gap width, fits, both object orders' steps) is the in-process model's on that frame."""
    values = {"model.backend": "remote", "model.base_url": model_server.base_url,
              "model.name_or_path": model_server.model_id, "model.max_new_tokens": 16, "model.max_in_flight": 2,
              "gap.object_a": "the orange cylinder", "gap.object_b": "the blue cylinder",
              "robot_width_m": 0.3, "safety_margin_m": 0.05, "check_gap_timeout_s": 60.0}
    with affordance_node_on(values, "remote_affordance", scene, 403) as (rgb, check_gap, _):
        response = call_check_gap(check_gap, 90)
    answer = json.loads(response.message)
    gap = GapQuery("x", "the orange cylinder", "the blue cylinder", 0.3, 0.05)
    want = gap_answer_from_estimates(gap, in_process.estimate([(Frame(rgb), q) for q in gap_queries(gap)]))
    assert want.gap_width_m is not None  # a number to compare: the tiny model answers this scene
    assert response.success and answer["backend"] == "remote" and answer["stamp"]["sec"] == 403, answer
    expected = want.to_dict()
    for key in ("gap_width_m", "fits", "consistent", "clearance_m", "answer", "steps"):
        assert answer[key] == expected[key], (key, answer[key], expected[key])


def test_affordance_node_answers_with_the_reason_while_the_server_is_away(ros, scene) -> None:
    """check_gap on a frame with the server unreachable: success false, the reason names the server, and
    the affordance node's /diagnostics say WARN."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from ros_helpers import wait_for

    values = {"model.backend": "remote", "model.base_url": f"http://127.0.0.1:{free_port()}/v1",
              "diagnostics_period_s": 0.2}
    with affordance_node_on(values, "away_affordance", scene, 400) as (_, check_gap, statuses):
        response = call_check_gap(check_gap, 30)
        assert not response.success and "cannot reach the model server" in response.message
        assert '"backend": "remote"' in response.message
        wait_for(lambda: any(s.level == DiagnosticStatus.WARN and "cannot reach" in s.message
                             and "affordance" in s.name for s in list(statuses)), 10, "WARN diagnostics")
