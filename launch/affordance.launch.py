"""Start the affordance node on a camera.

    ros2 launch spatialvlm_ros affordance.launch.py image:=/camera/color/image_raw \
        object_a:="the sofa" object_b:="the table"

Arguments remap the camera topics and override the model and the configured gap; everything else
(robot_width_m, safety_margin_m, max_frame_age_s, ...) comes from the config file (default: the installed
config/affordance.yaml; copy it and pass config:=/path/to/yours.yaml). The camera arguments,
use_sim_time, namespace and the Fast DDS profile are shared by every launch file
(spatialvlm_ros/launch_support.py). The launch ends, with a non-zero status, when the node fails.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from spatialvlm_ros import launch_support as ls

# launch argument -> node parameter it overrides when given (empty: keep the config file's value)
OVERRIDES = {"model": "model.name_or_path", "backend": "model.backend", "base_url": "model.base_url", "object_a": "gap.object_a", "object_b": "gap.object_b"}


def _nodes(context, *args, **kwargs):
    executable = "affordance_node_managed" if ls.is_true(context, "managed") else "affordance_node"
    node = ls.package_node(context, executable, name="spatialvlm_affordance",
                           parameters=[LaunchConfiguration("config"), ls.overrides(context, OVERRIDES)])
    return [node, ls.required(node)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *ls.camera_arguments(),
        DeclareLaunchArgument("model", default_value="",
                              description="hub id or local checkpoint; empty: the config file's"),
        DeclareLaunchArgument("backend", default_value="",
                              description="vlm | geometric | remote; empty: the config file's"),
        DeclareLaunchArgument("base_url", default_value="",
                              description="remote backend: the server's API root, e.g. http://gpu-box:8000/v1"),
        DeclareLaunchArgument("object_a", default_value="",
                              description="one side of the gap check_gap measures; empty: the config file's"),
        DeclareLaunchArgument("object_b", default_value="",
                              description="the other side of that gap; empty: the config file's"),
        DeclareLaunchArgument("config", default_value=ls.share_file("config", "affordance.yaml"),
                              description="parameter file"),
        *ls.managed_argument(),
        *ls.common_arguments(),
        OpaqueFunction(function=_nodes),
    ])
