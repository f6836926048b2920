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
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory("spatialvlm_ros")
REWARD_YAML = os.path.join(SHARE, "config", "reward.yaml")
AFFORDANCE_YAML = os.path.join(SHARE, "config", "affordance.yaml")
RECORDER_YAML = os.path.join(SHARE, "config", "recorder.yaml")

# launch argument -> node parameter it overrides when given (empty: keep the config files' value)
OVERRIDES = {
    "model": "model.name_or_path",
    "backend": "model.backend",
    "base_url": "model.base_url",
    "target_object": "target_object",
    "object_a": "gap.object_a",
    "object_b": "gap.object_b",
}


def _nodes(context, *args, **kwargs):
    overrides = {param: LaunchConfiguration(arg).perform(context) for arg, param in OVERRIDES.items()}
    overrides = {param: value for param, value in overrides.items() if value}
    config = LaunchConfiguration("config").perform(context)
    shared = ([config] if config else []) + [overrides]
    image = LaunchConfiguration("image").perform(context)
    common = {
        "package": "spatialvlm_ros",
        "namespace": LaunchConfiguration("namespace"),
        "remappings": [
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("depth", LaunchConfiguration("depth")),
        ],
        "output": "screen",
        "emulate_tty": True,
    }
    two_processes = UnlessCondition(LaunchConfiguration("single_process"))
    return [
        Node(executable="reward_node", name="spatialvlm_reward",
             parameters=[REWARD_YAML, *shared], condition=two_processes, **common),
        Node(executable="affordance_node", name="spatialvlm_affordance",
             parameters=[AFFORDANCE_YAML, *shared], condition=two_processes, **common),
        # No name= here: it would rename every node in the process. Each file's section names its node.
        Node(executable="spatialvlm_node", parameters=[REWARD_YAML, AFFORDANCE_YAML, *shared],
             condition=IfCondition(LaunchConfiguration("single_process")), **common),
        Node(executable="recorder_node", name="spatialvlm_recorder",
             parameters=[RECORDER_YAML, *shared],
             condition=IfCondition(LaunchConfiguration("recorder")), **common),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="colour image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info",
                              description="camera info topic of that image"),
        DeclareLaunchArgument("depth", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="depth aligned with the image (16UC1 mm or 32FC1 m)"),
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
        DeclareLaunchArgument("config", default_value="",
                              description="one parameter file for all nodes (sections per node name or "
                                          "/**), applied over the installed per-node files; empty: none"),
        DeclareLaunchArgument("single_process", default_value="false",
                              description="true: reward and affordance in one process, one model copy"),
        DeclareLaunchArgument("recorder", default_value="true",
                              description="start recorder_node (record service) too"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_shm_profile", default_value="true",
                              description="use the package's Fast DDS profile for camera-sized messages"),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               os.path.join(SHARE, "config", "fastdds_shm.xml"),
                               condition=IfCondition(LaunchConfiguration("use_shm_profile"))),
        OpaqueFunction(function=_nodes),
    ])
