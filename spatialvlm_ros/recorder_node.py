"""spatialvlm_recorder: records episodes of raw topics into rosbag2 (MCAP) directories on request.

Thin on purpose: the `record` service (std_srvs/SetBool) opens and finalizes an
``episodes.EpisodeWriter``; raw subscriptions hand it the serialized bytes with their receive
time. No torch, no GPU: this runs on the robot's own computer.

Topic types and QoS come from the graph. A topic is subscribed once a publisher appears (looked up
every ``topic_discovery_period_s``), reliable when all its publishers are reliable (so what is
published reliably is recorded completely), best-effort otherwise, like rosbag2. Subscriptions
stay up between episodes so an episode records from the moment `record` answers.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from std_srvs.srv import SetBool

from spatialvlm_ros import __version__
from spatialvlm_ros.node_support import NodeParams, StartupError, ThrottledLog, matching_qos, run_nodes
from spatialvlm_ros.params import RECORDER_PARAMS
from spatialvlm_ros.spatial import episodes

NODE_NAME = "spatialvlm_recorder"
NO_PUBLISHER_YET = "no publisher seen on this topic yet"
DRAIN_MAX = 256  # messages taken per callback beyond the one delivered, then others get a turn


@dataclass
class _Topic:
    """What the node knows about one configured topic."""

    name: str  # resolved (namespace + remapping applied)
    msgtype: str | None = None
    spec: episodes.TopicSpec | None = None
    subscription: Any = None
    reliable: bool = False
    transient_local: bool = False
    unrecordable: str | None = None
    latched: tuple[bytes, int] | None = None  # newest message of a transient-local topic


def import_message_class(msgtype: str) -> tuple[Any, str | None]:
    """The Python class of ``pkg/msg/Name`` (needed to subscribe), or None and why not."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name), None
    except (ValueError, ImportError, AttributeError) as exc:
        return None, (f"type {msgtype} cannot be imported here ({type(exc).__name__}: {exc}); "
                      "install its interface package where the recorder runs")


def _offered_qos(publishers: list[Any]) -> tuple[Any, ...]:
    def ns(duration: Any) -> int:
        return int(getattr(duration, "nanoseconds", 0))

    return tuple(
        episodes.make_qos(
            reliability=int(p.qos_profile.reliability),
            durability=int(p.qos_profile.durability),
            history=int(p.qos_profile.history),
            depth=int(p.qos_profile.depth),
            deadline_ns=ns(p.qos_profile.deadline),
            lifespan_ns=ns(p.qos_profile.lifespan),
            liveliness=int(p.qos_profile.liveliness),
            liveliness_lease_duration_ns=ns(p.qos_profile.liveliness_lease_duration),
        )
        for p in publishers
    )


class RecorderNode(Node):
    """Records the configured topics, as raw bytes, into one episode per `record` true/false."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._params = NodeParams(self, RECORDER_PARAMS, self._on_params)
        except (ValueError, ParameterException) as exc:  # rclpy checks ranges at declaration
            raise StartupError(f"invalid parameters: {exc}") from exc
        self._typestore = episodes.default_typestore()
        self._topics = self._resolve_topics(self._params["topics"])
        self._lock = threading.Lock()
        self._episode: episodes.EpisodeWriter | None = None
        self._duration_timer: Any = None
        self._last_stop: str | None = None
        self._throttled = ThrottledLog(self.get_logger(), period_s=5.0)
        # main() spins on one thread; on a multi-threaded executor (a test, a composed process)
        # these groups keep each topic queued in arrival order and let the service and timers
        # run beside message takes.
        self._sub_group = MutuallyExclusiveCallbackGroup()
        self._ctl_group = MutuallyExclusiveCallbackGroup()
        self.create_service(SetBool, "record", self._on_record, callback_group=self._ctl_group)
        self._discover()
        self._discovery_timer = self.create_timer(
            self._params["topic_discovery_period_s"], self._discover,
            callback_group=self._ctl_group,
        )
        if self._params["recover_on_start"]:
            # In the background: a big cut-off episode takes seconds to rebuild; recording may start.
            threading.Thread(target=self._recover_unfinalized, name="episode-recovery", daemon=True).start()
        self.get_logger().info(
            f"ready: service {self.resolve_service_name('record')} (true starts an episode under "
            f"{self._params['output_dir']}, false stops it); topics: {', '.join(self._topics)}"
        )

    # -- set-up -------------------------------------------------------------------------------

    def _recover_unfinalized(self) -> None:
        from spatialvlm_ros.spatial.recovery import recover_all

        try:
            for result in recover_all([self._params["output_dir"]]):
                if result.status == "in use":  # being recorded (by us or another recorder)
                    continue
                text = f"recovery of an unfinalized episode: {result.summary()}"
                (self.get_logger().info if result.status == "recovered" else self.get_logger().warning)(text)
        except Exception as exc:  # noqa: BLE001 - recovery must never stop the recorder
            self._throttled.warn("recovery", f"recovery of unfinalized episodes failed: {exc}")

    def _resolve_topics(self, names: list[str]) -> dict[str, _Topic]:
        if not names:
            raise StartupError("topics is empty: name at least one topic to record")
        topics: dict[str, _Topic] = {}
        for name in names:
            try:
                resolved = self.resolve_topic_name(name)
            except Exception as exc:  # noqa: BLE001 - rclpy raises several kinds for bad names
                raise StartupError(f"topics: {name!r} is not a valid topic name ({exc})") from exc
            topics.setdefault(resolved, _Topic(resolved))
        return topics

    def _on_params(self, new: dict[str, Any]) -> str | None:
        episode = self._episode
        if episode is not None:
            episode.set_labels(task=new["task"], target_object=new["target_object"])
        return None

    def _now_ns(self) -> int:
        try:
            return self.get_clock().now().nanoseconds
        except Exception:  # noqa: BLE001 - during shutdown the clock may be gone
            return time.time_ns()

    # -- topic discovery ----------------------------------------------------------------------

    def _discover(self) -> None:
        graph: dict[str, list[str]] | None = None
        for topic in self._topics.values():
            if topic.unrecordable is not None:
                continue
            if topic.subscription is None:
                if graph is None:
                    graph = dict(self.get_topic_names_and_types())
                self._try_subscribe(topic, graph.get(topic.name, []))
            elif topic.reliable:
                self._check_reliability(topic)

    def _try_subscribe(self, topic: _Topic, types: list[str]) -> None:
        if not types:
            return
        msgtype = types[0]
        if len(types) > 1:
            self._throttled.warn(
                f"types:{topic.name}",
                f"{topic.name} is published with several types ({', '.join(types)}); "
                f"recording {msgtype} only",
            )
        msg_class, reason = import_message_class(msgtype)
        if reason is None:
            reason = episodes.unrecordable_reason(msgtype, self._typestore)
        if reason is not None:
            self._mark_unrecordable(topic, reason)
            return
        publishers = self.get_publishers_info_by_topic(topic.name)
        if not publishers:
            return  # only subscribers so far: their QoS says nothing about what will be sent
        topic.msgtype = msgtype
        topic.spec = episodes.TopicSpec(topic.name, msgtype, _offered_qos(publishers))
        with self._lock:
            episode = self._episode
            if episode is not None:
                episode.add_topic(topic.spec)  # before the subscription: messages follow at once
        self._subscribe(topic, msg_class, publishers)

    def _subscribe(self, topic: _Topic, msg_class: Any, publishers: list[Any]) -> None:
        qos, topic.reliable, topic.transient_local = matching_qos(
            publishers, self._params["subscription_depth"]
        )
        # No QoS event callbacks on purpose: rclpy's executor does not survive an event
        # handler destroyed while it is ready, and _check_reliability replaces subscriptions.
        topic.subscription = self.create_subscription(
            msg_class, topic.name, partial(self._on_message, topic), qos,
            callback_group=self._sub_group, raw=True,
        )
        self.get_logger().info(
            f"recording {topic.name} ({topic.msgtype}, "
            f"{'reliable' if topic.reliable else 'best-effort'}, "
            f"{len(publishers)} publisher(s))"
        )

    def _check_reliability(self, topic: _Topic) -> None:
        publishers = self.get_publishers_info_by_topic(topic.name)
        if all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers):
            return
        # A reliable subscription does not match a best-effort publisher: switch to best-effort
        # (which matches both) rather than silently miss that publisher.
        self.get_logger().warning(
            f"{topic.name}: a best-effort publisher appeared; re-subscribing best-effort (its "
            "messages, and those of reliable publishers, are no longer guaranteed)"
        )
        msg_class, _ = import_message_class(topic.msgtype or "")
        old = topic.subscription
        self._subscribe(topic, msg_class, publishers)
        self.destroy_subscription(old)

    def _mark_unrecordable(self, topic: _Topic, reason: str) -> None:
        topic.unrecordable = reason
        self.get_logger().error(f"{topic.name} will not be recorded: {reason}")
        with self._lock:
            if self._episode is not None:
                self._episode.report_unrecorded(topic.name, reason)

    # -- messages -------------------------------------------------------------------------------

    def _on_message(self, topic: _Topic, data: bytes) -> None:
        self._accept(topic, data)
        # rclpy's executor takes one message per subscription per wait; under load (2 cores, a
        # camera and depth at 30 Hz) it falls behind and a KEEP_LAST reader history overflows.
        # Draining what is already waiting here keeps up at a fraction of the cost.
        subscription = topic.subscription
        try:
            with subscription.handle:
                for _ in range(DRAIN_MAX):
                    taken = subscription.handle.take_message(subscription.msg_type, True)
                    if taken is None:
                        break
                    self._accept(topic, taken[0])
        except InvalidHandle:  # destroyed meanwhile (re-subscribed or shutting down)
            pass

    def _accept(self, topic: _Topic, data: bytes) -> None:
        stamp = self._now_ns()
        if topic.transient_local:
            topic.latched = (data, stamp)
        episode = self._episode
        if episode is not None:
            episode.put(topic.name, data, stamp)

    def _on_drop(self, topic: str, total: int) -> None:
        self._throttled.warn(
            "drop",
            f"dropping {topic}: {self._params['max_queue_mb']} MiB are waiting for the disk, "
            f"which cannot keep up ({total} messages dropped in this episode)",
        )

    # -- episodes -------------------------------------------------------------------------------

    def _on_record(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            response.success, response.message = self.start_episode()
        else:
            response.success, response.message = self.stop_episode("stopped by the record service")
        return response

    def start_episode(self) -> tuple[bool, str]:
        """Open a new episode; (True, its directory) or (False, why not)."""
        with self._lock:
            if self._episode is not None:
                return False, f"already recording: {self._episode.directory}"
            values = self._params.values
            episode = episodes.EpisodeWriter(
                episodes.new_episode_dir(values["output_dir"]),
                task=values["task"],
                target_object=values["target_object"],
                software_version=__version__,
                max_queue_bytes=int(values["max_queue_mb"]) << 20,
                typestore=self._typestore,
                clock_ns=self._now_ns,
                on_drop=self._on_drop,
                on_finished=self._on_finished,
                flush_period_s=float(values["flush_period_s"]),
                compression=values["compression"],
            )
            specs = [t.spec for t in self._topics.values() if t.spec is not None]
            unrecorded = {
                t.name: t.unrecordable or NO_PUBLISHER_YET
                for t in self._topics.values() if t.spec is None
            }
            try:
                episode.open(specs, unrecorded)
            except episodes.EpisodeError as exc:
                self.get_logger().error(f"cannot record: {exc}")
                return False, f"cannot record: {exc}"
            for topic in self._topics.values():
                if topic.latched is not None and topic.spec is not None:
                    episode.put(topic.name, *topic.latched)
            self._episode = episode
            limit_s = float(values["max_episode_duration_s"])
            if limit_s > 0:
                self._duration_timer = self.create_timer(
                    limit_s, partial(self._on_duration_limit, episode),
                    callback_group=self._ctl_group,
                )
        self.get_logger().info(f"recording episode {episode.directory}")
        return True, str(episode.directory)

    def stop_episode(self, reason: str) -> tuple[bool, str]:
        """Finalize the open episode; (True, its directory) or (False, why not)."""
        with self._lock:
            episode, self._episode = self._episode, None
            self._cancel_duration_timer()
            last_stop = self._last_stop
        if episode is None:
            extra = f" (the last episode stopped on its own: {last_stop})" if last_stop else ""
            return False, "not recording" + extra
        summary = episode.finalize(reason)  # outside the lock: the writer thread reports back
        self._report(summary)
        return True, str(summary.directory)

    @property
    def recording(self) -> bool:
        return self._episode is not None

    def unrecorded_topics(self) -> dict[str, str]:
        """Configured topics not being recorded (yet), with the reason."""
        return {t.name: t.unrecordable or NO_PUBLISHER_YET
                for t in self._topics.values() if t.subscription is None}

    @property
    def episode(self) -> episodes.EpisodeWriter | None:
        return self._episode

    def _on_duration_limit(self, episode: episodes.EpisodeWriter) -> None:
        if self._episode is not episode:
            return
        limit = self._params["max_episode_duration_s"]
        reason = f"max_episode_duration_s ({limit:g} s) reached"
        self.stop_episode(reason)
        with self._lock:
            self._last_stop = f"{episode.directory}: {reason}"

    def _on_finished(self, summary: episodes.EpisodeSummary) -> None:
        # Writer thread. Only an error ends an episode from here; a normal stop already
        # cleared self._episode before finalize().
        with self._lock:
            if self._episode is None or self._episode.directory != summary.directory:
                return
            self._episode = None
            self._cancel_duration_timer()
            self._last_stop = f"{summary.directory}: {summary.stop_reason}"
        self._report(summary)

    def _cancel_duration_timer(self) -> None:
        timer, self._duration_timer = self._duration_timer, None
        if timer is not None:
            timer.cancel()
            self.destroy_timer(timer)

    def _report(self, summary: episodes.EpisodeSummary) -> None:
        text = (f"episode {summary.directory}: {summary.message_count} messages, "
                f"{summary.frames_dropped} dropped ({summary.stop_reason})")
        try:
            if summary.error or not summary.bag_readable:
                self.get_logger().error(
                    text + ("" if summary.bag_readable else "; the bag could not be finalized")
                )
            else:
                self.get_logger().info(text)
        except Exception:  # noqa: BLE001 - logging can fail late in shutdown; the files are done
            print(text, flush=True)

    def close(self) -> None:
        """Finalize the open episode (main() calls it on SIGINT, SIGTERM or any exit)."""
        with self._lock:
            episode, self._episode = self._episode, None
            self._cancel_duration_timer()
        if episode is not None:
            self._report(episode.finalize("node shut down (SIGINT/SIGTERM or exit)"))


def main() -> int:
    # Single-threaded: this node's callbacks only queue bytes, and rclpy's multi-threaded executor
    # cost about four times the CPU for the same messages (bench/recorder.py's workload).
    return run_nodes([RecorderNode], num_threads=1)


if __name__ == "__main__":
    raise SystemExit(main())
