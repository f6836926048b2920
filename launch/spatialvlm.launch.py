"""Start everything on one camera: reward_node, affordance_node and recorder_node.

    ros2 launch spatialvlm_ros spatialvlm.launch.py image:=/camera/color/image_raw \
        model:=Qwen/Qwen2.5-VL-7B-Instruct target_object:="the red cup" object_a:="the sofa" object_b:="the table"
    ros2 launch spatialvlm_ros spatialvlm.launch.py single_process:=true   # one model copy for both features
    ros2 launch spatialvlm_ros spatialvlm.launch.py config:=/path/to/robot.yaml

Parameters, later ones winning: each node's own generated file (config/reward.yaml, affordance.yaml,
recorder.yaml: the documented defaults, one source of truth), then ``config`` -- ONE file for all nodes,
with a section per node name (``spatialvlm_reward:``, ``spatialvlm_affordance:``, ``spatialvlm_recorder:``)
and/or a ``/**:`` section for values every node shares such as ``model.*`` -- then the launch arguments
that are given. A node ignores parameters it does not declare, so every argument goes to every node:
``target_object`` is the reward's target and the recorder's episode target, ``model`` the model of both
model nodes.

``single_process:=false`` (default) runs reward and affordance as two processes, each loading the model;
``single_process:=true`` runs them in one process (``spatialvlm_node``) around one model copy, as long as
their ``model.*`` parameters are equal (the node logs whether they are shared).

Every node started here is required: when one fails (a model that cannot be loaded exits 2), the whole
launch stops with a non-zero status rather than running on with the recorder alone.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from spatialvlm_ros import launch_support as ls

# launch argument -> node parameter it overrides when given (empty: keep the config files' value)
OVERRIDES = {
    "model": "model.name_or_path",
    "backend": "model.backend",
    "base_url": "model.base_url",
    "target_object": "target_object",
    "object_a": "gap.object_a",
    "object_b": "gap.object_b",
    "output_dir": "output_dir",
}


def _nodes(context, *args, **kwargs):
    config = LaunchConfiguration("config").perform(context)
    shared = ([config] if config else []) + [ls.overrides(context, OVERRIDES)]
    reward_yaml = ls.share_file("config", "reward.yaml")
    affordance_yaml = ls.share_file("config", "affordance.yaml")
    if ls.is_true(context, "single_process"):
        # No name= here: it would rename every node in the process. Each file's section names its node.
        nodes = [ls.package_node(context, "spatialvlm_node", parameters=[reward_yaml, affordance_yaml, *shared])]
    else:
        nodes = [
            ls.package_node(context, "reward_node", name="spatialvlm_reward", parameters=[reward_yaml, *shared]),
            ls.package_node(context, "affordance_node", name="spatialvlm_affordance",
                            parameters=[affordance_yaml, *shared]),
        ]
    if ls.is_true(context, "recorder"):
        nodes.append(ls.package_node(context, "recorder_node", name="spatialvlm_recorder",
                                     parameters=[ls.share_file("config", "recorder.yaml"), *shared]))
    return [*nodes, *[ls.required(node) for node in nodes]]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *ls.camera_arguments(),
        DeclareLaunchArgument("model", default_value="",
                              description="hub id or local checkpoint for both model nodes; empty: the config's"),
        DeclareLaunchArgument("backend", default_value="",
                              description="vlm | geometric | remote; empty: the config file's"),
        DeclareLaunchArgument("base_url", default_value="",
                              description="remote backend: the server's API root, e.g. http://gpu-box:8000/v1"),
        DeclareLaunchArgument("target_object", default_value="",
                              description="what the gripper reaches for; empty: the config's"),
        DeclareLaunchArgument("object_a", default_value="",
                              description="one side of the gap check_gap measures; empty: the config's"),
        DeclareLaunchArgument("object_b", default_value="",
                              description="the other side of that gap; empty: the config's"),
        DeclareLaunchArgument("output_dir", default_value="",
                              description="where the recorder writes episodes; empty: the config's"),
        DeclareLaunchArgument("config", default_value="",
                              description="one parameter file for all nodes (sections per node name or "
                                          "/**), applied over the installed per-node files; empty: none"),
        DeclareLaunchArgument("single_process", default_value="false",
                              description="true: reward and affordance in one process, one model copy"),
        DeclareLaunchArgument("recorder", default_value="true",
                              description="start recorder_node (record service) too"),
        *ls.common_arguments(),
        OpaqueFunction(function=_nodes),
    ])
