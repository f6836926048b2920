"""The managed (lifecycle) variants, driven over the real lifecycle services (lifecycle_msgs/srv/ChangeState,
GetState) from another node, as `ros2 lifecycle set` and nav2's lifecycle manager drive them: the model
is loaded on configure, frames flow only while active, deactivate keeps the model, cleanup frees it.
"""

from __future__ import annotations

import gc
import signal
import weakref

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_helpers import VENV_BIN, Probe, Spinner, start_process, wait_for
from std_srvs.srv import Trigger

from spatialvlm_ros.affordance_node import AffordanceNode
from spatialvlm_ros.managed import managed
from spatialvlm_ros.reward_node import RewardNode
from spatialvlm_ros.spatial import estimator as estimator_module


class LifecycleClient(Node):
    """What `ros2 lifecycle set/get` does: calls the target node's change_state and get_state services."""

    def __init__(self, target: str, name: str = "test_lifecycle_client") -> None:
        super().__init__(name)
        self.change = self.create_client(ChangeState, f"/{target}/change_state")
        self.get = self.create_client(GetState, f"/{target}/get_state")

    def _call(self, client, request, timeout: float = 60.0):
        wait_for(client.service_is_ready, 15, f"{client.srv_name}")
        future = client.call_async(request)
        wait_for(future.done, timeout, f"the answer of {client.srv_name}")
        return future.result()

    def set_unanswered(self, transition_id: int, wait_s: float = 3.0) -> bool:
        """Request a transition; True when no answer came within ``wait_s`` (rclpy's lifecycle service
        raises instead of answering a transition the current state does not have)."""
        wait_for(self.change.service_is_ready, 15, "change_state")
        future = self.change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        try:
            wait_for(future.done, wait_s, "change_state")
        except AssertionError:
            return True
        return not future.result().success

    def set(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        # Asked again when unanswered: a request sent while the server's reply path is still being
        # discovered (service_is_ready is true once the request path is) can be lost. get_state is
        # harmless to repeat; change_state requests are sent once.
        for _ in range(5):
            wait_for(self.get.service_is_ready, 15, "get_state")
            future = self.get.call_async(GetState.Request())
            try:
                wait_for(future.done, 5, "get_state's answer")
            except AssertionError:
                self.get.remove_pending_request(future)
                continue
            return future.result().current_state.label
        raise AssertionError("get_state never answered")




def _image_subscribers(probe: Probe) -> int:
    return probe.image_pub.get_subscription_count()


def test_managed_reward_node_loads_on_configure_and_frees_on_cleanup(ros):
    from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

    scene = ApproachScene(frames=4)
    node = managed(RewardNode)(parameter_overrides=[
        Parameter("model.name_or_path", value="builtin:tiny-spatial"),
        Parameter("model.max_new_tokens", value=16),
        Parameter("target_object", value=scene.target_description)])
    probe = Probe("managed_reward_probe")
    client = LifecycleClient("spatialvlm_reward")
    spinner = Spinner(node, probe, client)
    try:
        assert client.state() == "unconfigured"
        assert node.estimator is None and not estimator_module._SHARED  # nothing loaded yet
        assert client.set(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "inactive"
        loaded = node.estimator
        assert loaded is not None and list(estimator_module._SHARED.values()) == [loaded]
        model_ref = weakref.ref(loaded.inner.model)
        assert _image_subscribers(probe) == 0  # configured, not yet taking frames

        assert client.set(Transition.TRANSITION_ACTIVATE)
        assert client.state() == "active"
        wait_for(lambda: _image_subscribers(probe) > 0, what="the camera subscription on activate")
        wait_for(lambda: node.info_pub.get_subscription_count() > 0, what="probe subscribed")
        probe.send_rgb(scene.render(0).rgb, 3001)
        wait_for(lambda: probe.info_for(3001) is not None, 30, "a reward while active")
        assert probe.info_for(3001)["error"] is None

        assert client.set(Transition.TRANSITION_DEACTIVATE)
        assert client.state() == "inactive"
        assert node.estimator is loaded and model_ref() is not None  # the model stays loaded
        wait_for(lambda: _image_subscribers(probe) == 0, what="the camera unsubscribed on deactivate")
        probe.send_rgb(scene.render(1).rgb, 3002)

        assert client.set(Transition.TRANSITION_CLEANUP)
        assert client.state() == "unconfigured"
        assert node.estimator is None and not estimator_module._SHARED
        del loaded
        gc.collect()
        assert model_ref() is None  # the weights are gone, not only unreferenced by the node
        assert probe.info_for(3002) is None  # nothing was measured while inactive

        # configure again: a fresh model, and the node works as before
        assert client.set(Transition.TRANSITION_CONFIGURE) and client.set(Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: _image_subscribers(probe) > 0, what="subscribed again")
        probe.send_rgb(scene.render(3).rgb, 3003)
        wait_for(lambda: probe.info_for(3003) is not None, 30, "a reward after re-configuring")
        assert client.set(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert client.state() == "finalized"
        assert node.estimator is None and not estimator_module._SHARED
    finally:
        spinner.stop()
        node.close()
        for n in (node, probe, client):
            n.destroy_node()


def test_configure_failure_leaves_the_node_unconfigured_with_the_reason(ros):
    node = managed(RewardNode)(parameter_overrides=[Parameter("model.name_or_path", value="/does/not/exist")])
    client = LifecycleClient("spatialvlm_reward", "test_lifecycle_client_fail")
    spinner = Spinner(node, client)
    try:
        assert not client.set(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "unconfigured"
        assert "is not an existing directory" in node.configure_error
        assert node.estimator is None and node.camera is None
    finally:
        spinner.stop()
        node.close()
        node.destroy_node()
        client.destroy_node()


class Scripted:
    """Stands in for the model in the affordance test: every gap is 90 cm, read by the real parser."""

    backend = "scripted"
    model_name = "scripted-gap"

    def __init__(self) -> None:
        self.closed = False

    def estimate(self, items, samples: int = 1):
        from spatialvlm_ros.spatial.estimator import combine_answers

        return [combine_answers(query, ["about 90 cm"] * samples) for _, query in items]

    def close(self) -> None:
        self.closed = True


def test_managed_affordance_node_answers_only_while_active(ros):
    import json

    import numpy as np

    model = Scripted()
    node = managed(AffordanceNode)(estimator=model)
    probe = Probe("managed_affordance_probe")
    client = LifecycleClient("spatialvlm_affordance", "test_lifecycle_client_aff")
    check_gap = probe.create_client(Trigger, "check_gap")
    spinner = Spinner(node, probe, client)

    def ask() -> dict:
        wait_for(check_gap.service_is_ready, what="check_gap")
        future = check_gap.call_async(Trigger.Request())
        wait_for(future.done, 20, "check_gap's answer")
        return json.loads(future.result().message)

    try:
        assert ask()["reason"].startswith("the node is not active")
        assert client.set(Transition.TRANSITION_CONFIGURE) and node.estimator is model
        assert client.set(Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: _image_subscribers(probe) > 0, what="the camera subscription")
        probe.send_rgb(np.full((48, 64, 3), 90, np.uint8), 4001)
        wait_for(lambda: node.newest_frame() is not None, what="a frame")
        answer = ask()
        assert answer["gap_width_m"] == pytest.approx(0.9) and answer["fits"] is not None
        assert client.set(Transition.TRANSITION_DEACTIVATE)
        refused = ask()
        assert refused["fits"] is None and refused["reason"] == "the node was deactivated"
        assert not model.closed  # deactivate keeps the model
        assert client.set(Transition.TRANSITION_CLEANUP)
        assert model.closed and node.estimator is None
    finally:
        spinner.stop()
        node.close()
        for n in (node, probe, client):
            n.destroy_node()


@pytest.mark.slow
def test_managed_executable_over_the_lifecycle_services_across_processes(ros):
    """reward_node_managed as users start it, driven from this process; SIGINT ends it cleanly."""
    proc = start_process([str(VENV_BIN / "reward_node_managed"), "--ros-args",
                          "-p", "model.name_or_path:=builtin:tiny-spatial"])
    client = LifecycleClient("spatialvlm_reward", "test_lifecycle_client_proc")
    spinner = Spinner(client)
    try:
        assert client.state() == "unconfigured"
        assert client.set(Transition.TRANSITION_CONFIGURE) and client.state() == "inactive"
        assert client.set(Transition.TRANSITION_ACTIVATE) and client.state() == "active"
        wait_for(lambda: client.count_subscribers("/image") > 0, 10, "the node's camera subscription")
        assert client.set(Transition.TRANSITION_DEACTIVATE)
        wait_for(lambda: client.count_subscribers("/image") == 0, 10, "no camera subscription")
        assert client.set(Transition.TRANSITION_CLEANUP) and client.state() == "unconfigured"
        # A transition the state does not have (activate while unconfigured): rclpy's lifecycle service
        # raises instead of answering; the node logs it and lives on, still unconfigured.
        assert client.set_unanswered(Transition.TRANSITION_ACTIVATE)
        assert proc.poll() is None and client.state() == "unconfigured"
    finally:
        spinner.stop()
        client.destroy_node()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "configured: model builtin:tiny-spatial loaded" in out and "cleaned up: model freed" in out
    assert "Transition is not registered" in out and "the node goes on" in out
    # no progress bar from transformers' weight loading (carriage returns in launch logs)
    assert "\r" not in out and "Loading weights" not in out


def test_managed_pair_in_one_process_shares_one_model_until_the_last_cleanup(ros):
    """spatialvlm_node_managed's pair (managed reward and affordance nodes in one process, equal model.*):
    the first configure loads the model, the second shares it, cleaning up one leaves the other working,
    and the last cleanup frees the weights."""
    model = [Parameter("model.name_or_path", value="builtin:tiny-spatial"), Parameter("model.max_new_tokens", value=16)]
    reward = managed(RewardNode)(parameter_overrides=model)
    affordance = managed(AffordanceNode)(parameter_overrides=model)
    reward_client = LifecycleClient("spatialvlm_reward", "pair_reward_client")
    affordance_client = LifecycleClient("spatialvlm_affordance", "pair_affordance_client")
    spinner = Spinner(reward, affordance, reward_client, affordance_client)
    try:
        assert reward_client.set(Transition.TRANSITION_CONFIGURE)
        shared = reward.estimator
        model_ref = weakref.ref(shared.inner.model)
        assert affordance_client.set(Transition.TRANSITION_CONFIGURE)
        assert affordance.estimator is shared and list(estimator_module._SHARED.values()) == [shared]
        assert reward_client.set(Transition.TRANSITION_CLEANUP) and reward.estimator is None
        assert list(estimator_module._SHARED.values()) == [shared] and model_ref() is not None
        assert affordance_client.set(Transition.TRANSITION_ACTIVATE)
        assert affordance_client.state() == "active"
        assert affordance_client.set(Transition.TRANSITION_DEACTIVATE)
        assert affordance_client.set(Transition.TRANSITION_CLEANUP) and not estimator_module._SHARED
        del shared
        gc.collect()
        assert model_ref() is None
    finally:
        spinner.stop()
        for node in (reward, affordance):
            node.close()
        for n in (reward, affordance, reward_client, affordance_client):
            n.destroy_node()


@pytest.mark.slow
def test_managed_pair_executable_starts_both_unconfigured(ros):
    """spatialvlm_node_managed as users start it: both nodes wait unconfigured, configure loads, SIGINT ends
    it cleanly."""
    proc = start_process([str(VENV_BIN / "spatialvlm_node_managed"), "--ros-args",
                          "-p", "model.name_or_path:=builtin:tiny-spatial"])
    clients = [LifecycleClient(name, f"pair_proc_client_{i}")
               for i, name in enumerate(("spatialvlm_reward", "spatialvlm_affordance"))]
    spinner = Spinner(*clients)
    try:
        assert [c.state() for c in clients] == ["unconfigured", "unconfigured"]
        assert all(c.set(Transition.TRANSITION_CONFIGURE) for c in clients)
        assert [c.state() for c in clients] == ["inactive", "inactive"]
    finally:
        spinner.stop()
        for c in clients:
            c.destroy_node()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert out.count("configured: model builtin:tiny-spatial loaded") == 2, out
