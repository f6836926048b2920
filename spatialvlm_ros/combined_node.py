"""spatialvlm_node: reward_node and affordance_node in one process around one model copy.

Both nodes ask ``shared_estimator`` for their model, so when their ``model.*`` parameters are equal they
share one loaded model (calls take turns on it). ROS parameters are per node: set the model under both
node names (a parameter file with both sections, a ``/**:`` section, or ``-p`` on the command line,
which applies to every node in the process). When they differ, two copies are loaded and a warning says
so.

``spatialvlm_node_managed`` is the same pair as managed (lifecycle) nodes (``managed.py``): each is
configured, activated, deactivated and cleaned up on its own; the model copy they share is loaded by the
first configure and freed by the last cleanup.
"""

from __future__ import annotations

from rclpy.node import Node

from spatialvlm_ros.affordance_node import AffordanceNode
from spatialvlm_ros.node_support import run_nodes
from spatialvlm_ros.reward_node import RewardNode


def main(args: list[str] | None = None) -> None:
    created: list[Node] = []

    def reward() -> Node:
        node = RewardNode()
        created.append(node)
        return node

    def affordance() -> Node:
        node = AffordanceNode()
        first = created[0] if created else None
        if first is not None and getattr(first, "estimator", None) is node.estimator:
            node.get_logger().info(f"one model copy shared with {first.get_name()}")
        elif first is not None:
            node.get_logger().warning(
                f"model.* parameters differ from {first.get_name()}'s: this process holds two model "
                "copies; set the same model.* values for both nodes to share one")
        return node

    raise SystemExit(run_nodes([reward, affordance]))


def managed_main(args: list[str] | None = None) -> None:
    from spatialvlm_ros.managed import managed

    raise SystemExit(run_nodes([managed(RewardNode), managed(AffordanceNode)]))


if __name__ == "__main__":
    main()
