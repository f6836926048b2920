"""RewardClient against a real RewardNode over real topics: one reward_info per frame whatever happens to it
(answered, replaced, refused, failed), both frame policies, the stamped reward, timeouts and the cache.

The node runs the scripted estimator of test_reward_node (the distance written in the frame's first
pixel, 255 = slow until released) extended with 254 = the estimator raises.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from ros_helpers import Spinner, wait_for
from test_reward_node import ScriptedEstimator, frame_with

from spatialvlm_ros.client import NS_PER_S, RewardClient, stamp_ns
from spatialvlm_ros.reward_node import RewardNode


class FailingEstimator(ScriptedEstimator):
    """Raises for frames whose first pixel is 254 (a CUDA error, a remote server gone...)."""

    def estimate(self, items, samples: int = 1):
        if any(int(frame.rgb[0, 0, 0]) == 254 for frame, _ in items):
            self.calls += 1
            raise RuntimeError("CUDA error: device-side assert triggered")
        return super().estimate(items, samples)




@pytest.fixture
def node_and_client(ros, request):
    overrides = dict(getattr(request, "param", {}))
    cache_size = overrides.pop("_cache_size", 1024)
    estimator = FailingEstimator()
    node = RewardNode(estimator=estimator, parameter_overrides=[
        Parameter(k, value=v) for k, v in overrides.items()])
    spinner = Spinner(node)
    client = RewardClient(cache_size=cache_size)
    assert client.wait_for_node(10), "client and node did not match"
    yield node, client, estimator
    estimator.release.set()
    client.close()
    spinner.stop()
    node.close()
    node.destroy_node()


def occupy_model(node: RewardNode, client: RewardClient) -> int:
    """Send the scripted slow frame and wait until the model is busy with it; its stamp."""
    stamp = client.publish_image(frame_with(255))
    wait_for(lambda: node._worker.busy.is_set(), what="model busy")
    return stamp


def test_stamp_conversions():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    ns = 3 * NS_PER_S + 5
    assert stamp_ns(ns) == stamp_ns((3, 5)) == stamp_ns(Time(sec=3, nanosec=5)) == ns
    assert stamp_ns(Header(stamp=Time(sec=3, nanosec=5))) == stamp_ns({"stamp": {"sec": 3, "nanosec": 5}}) == ns
    for bad in ("3.5", 3.5, None, True):
        with pytest.raises(TypeError):
            stamp_ns(bad)


@pytest.mark.parametrize("node_and_client", [{"frame_policy": "every"}], indirect=True)
def test_each_frame_gets_its_own_reward_and_a_stamped_reward(node_and_client):
    node, client, _ = node_and_client
    stamped: list[PointStamped] = []
    client.node.create_subscription(PointStamped, "reward_stamped", stamped.append, 10)
    wait_for(lambda: node.reward_stamped_pub.get_subscription_count() > 0, what="reward_stamped matched")
    stamps = [client.publish_image(frame_with(cm)) for cm in (40, 30, 25)]
    assert stamps == sorted(set(stamps)), "the client's stamps must be unique and increasing"
    results = [client.get_reward(s, timeout_s=10) for s in stamps]  # asked in order, answered by stamp
    assert [r.status for r in results] == ["rewarded"] * 3
    assert [r.reward for r in results] == pytest.approx([-0.40, -0.30, -0.25])
    assert [r.distance_m for r in results] == pytest.approx([0.40, 0.30, 0.25])
    assert all(r.ok and r.reason is None and r.received_monotonic_s is not None for r in results)
    # asking again (or out of order) gives the same answer: the cache is keyed by stamp
    assert client.get_reward(stamps[0], timeout_s=0).reward == pytest.approx(-0.40)
    wait_for(lambda: len(stamped) == 3, what="three stamped rewards")
    assert [stamp_ns(m) for m in stamped] == stamps
    assert [v for m in stamped for v in (m.point.x, m.point.y, m.point.z)] == pytest.approx(
        [-0.40, 0.40, 0.40, -0.30, 0.30, 0.30, -0.25, 0.25, 0.25])
    assert stamped[0].header.frame_id == "camera"


def test_a_failed_estimator_call_still_answers_its_frame(node_and_client):
    node, client, estimator = node_and_client
    failed = client.publish_image(frame_with(254))
    result = client.get_reward(failed, timeout_s=10)
    assert result.status == "estimator_error" and not result.ok and result.reward is None
    assert "RuntimeError" in result.reason and "device-side assert" in result.reason
    assert result.info["reward"] is None and result.info["distance_m"] is None
    assert result.info["latency_ms"] >= 0
    # the node goes on with the next frame
    after = client.get_reward(client.publish_image(frame_with(30)), timeout_s=10)
    assert after.ok and after.reward == pytest.approx(-0.30)
    assert estimator.calls == 2 and "device-side assert" in node._last_error


def test_a_frame_without_a_distance_says_why(node_and_client):
    _, client, _ = node_and_client
    result = client.get_reward(client.publish_image(frame_with(0)), timeout_s=10)  # the model refuses
    assert result.status == "no_distance" and "no distance" in result.reason and result.reward is None


def test_newest_policy_replaced_frames_are_answered_as_dropped(node_and_client):
    node, client, estimator = node_and_client
    slow = occupy_model(node, client)  # until released
    later = []
    for cm in range(20, 30):
        later.append(client.publish_image(frame_with(cm)))
        wait_for(lambda s=later[-1]: (i := node._slot.peek()) is not None and stamp_ns(i.header) == s,
                 what="the frame waiting in the slot")
    estimator.release.set()
    results = [client.get_reward(s, timeout_s=15) for s in [slow, *later]]
    assert [r.status for r in results] == ["rewarded"] + ["dropped"] * 9 + ["rewarded"]
    assert all("newer frame" in r.reason for r in results[1:10])
    assert results[-1].reward == pytest.approx(-0.29)
    assert results[-1].info["frames_dropped"] == 9


@pytest.mark.parametrize("node_and_client", [{"frame_policy": "every", "frame_queue_size": 32}], indirect=True)
def test_every_policy_answers_every_frame_in_order(node_and_client):
    node, client, estimator = node_and_client
    slow = occupy_model(node, client)
    stamps = [client.publish_image(frame_with(cm)) for cm in range(20, 40)]  # 20 frames while it is busy
    wait_for(lambda: len(node._slot) == 20, what="20 frames queued")
    estimator.release.set()
    results = [client.get_reward(s, timeout_s=15) for s in [slow, *stamps]]
    assert [r.status for r in results] == ["rewarded"] * 21
    assert [r.reward for r in results[1:]] == pytest.approx([-cm / 100 for cm in range(20, 40)])
    arrival = [r.received_monotonic_s for r in results]
    assert arrival == sorted(arrival), "answers must come in the order the frames were sent"
    assert results[-1].info["frames_dropped"] == 0


@pytest.mark.parametrize("node_and_client", [{"frame_policy": "every", "frame_queue_size": 3}], indirect=True)
def test_every_policy_refuses_beyond_the_queue_and_says_so(node_and_client):
    node, client, estimator = node_and_client
    slow = occupy_model(node, client)
    stamps = []
    for n, cm in enumerate(range(20, 26), start=2):  # 3 fit in the queue, 3 are refused
        stamps.append(client.publish_image(frame_with(cm)))
        wait_for(lambda n=n: node.camera.received == n, what="frame received")
    refused = [client.get_reward(s, timeout_s=10) for s in stamps[3:]]
    assert [r.status for r in refused] == ["refused"] * 3  # answered at once, while the model is busy
    assert all("frame_queue_size" in r.reason for r in refused)
    assert node._worker.busy.is_set()
    estimator.release.set()
    queued = [client.get_reward(s, timeout_s=15) for s in [slow, *stamps[:3]]]
    assert [r.status for r in queued] == ["rewarded"] * 4
    assert [r.reward for r in queued[1:]] == pytest.approx([-0.20, -0.21, -0.22])
    assert node._slot.dropped == 3 and queued[-1].info["frames_dropped"] == 3


def test_unknown_stamp_times_out_with_a_reason(node_and_client):
    _, client, _ = node_and_client
    result = client.get_reward((12345, 0), timeout_s=0.3)
    assert result.status == "timeout" and result.info is None and result.reward is None
    assert "did not reach the node" in result.reason


def test_no_node_times_out_saying_none_is_running(ros):
    client = RewardClient(namespace="/nobody_here")
    try:
        result = client.get_reward(client.publish_image(frame_with(30)), timeout_s=0.3)
        assert result.status == "timeout" and "no reward_node publishes reward_info" in result.reason
        ok, message = client.reset(timeout_s=0.3)
        assert not ok and "not available" in message
    finally:
        client.close()


@pytest.mark.parametrize("node_and_client", [{"_cache_size": 3, "frame_policy": "every"}], indirect=True)
def test_the_cache_is_bounded(node_and_client):
    _, client, _ = node_and_client
    stamps = [client.publish_image(frame_with(cm)) for cm in range(30, 36)]
    assert client.get_reward(stamps[-1], timeout_s=10).ok
    wait_for(lambda: client.evicted == 3, what="three answers evicted")
    assert client.get_reward(stamps[-3], timeout_s=0).ok
    old = client.get_reward(stamps[0], timeout_s=0.2)
    assert old.status == "timeout" and "evicted" in old.reason and "cache_size 3" in old.reason
    client.forget(stamps[-1])
    assert client.get_reward(stamps[-1], timeout_s=0).status == "timeout"


def test_reset_and_set_target_through_the_client(node_and_client):
    node, client, _ = node_and_client
    first = client.get_reward(client.publish_image(frame_with(30)), timeout_s=10)
    ok, message = client.reset()
    assert ok and "episode 1" in message
    ok, reason = client.set_target("the red cup")
    assert ok, reason
    assert node.params["target_object"] == "the red cup"
    after = client.get_reward(client.publish_image(frame_with(30)), timeout_s=10)
    assert (first.info["episode"], after.info["episode"]) == (0, 2)
    assert after.info["target"] == "the red cup"
    ok, reason = client.set_target("   ")
    assert not ok and "must not be empty" in reason


def test_frames_waiting_at_close_are_answered_as_not_measured(ros):
    estimator = FailingEstimator()
    node = RewardNode(estimator=estimator, parameter_overrides=[Parameter("frame_policy", value="every")])
    spinner = Spinner(node)
    client = RewardClient()
    try:
        assert client.wait_for_node(10)
        occupy_model(node, client)
        waiting = [client.publish_image(frame_with(cm)) for cm in (20, 21)]
        wait_for(lambda: len(node._slot) == 2, what="two frames queued")
        closer = threading.Thread(target=node.close)
        closer.start()
        estimator.release.set()
        closer.join(10)
        results = [client.get_reward(s, timeout_s=5) for s in waiting]
        assert [r.status for r in results] == ["not_measured"] * 2
        assert all("stopped" in r.reason for r in results)
    finally:
        estimator.release.set()
        client.close()
        spinner.stop()
        node.destroy_node()


def test_image_arrays_must_be_rgb8(node_and_client):
    _, client, _ = node_and_client
    with pytest.raises(ValueError, match="must be uint8"):
        client.publish_image(np.zeros((4, 4, 3), np.float32))
