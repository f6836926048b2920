"""Start the reward node on a camera.

    ros2 launch spatialvlm_ros reward.launch.py image:=/camera/color/image_raw target_object:="the red cup"

Arguments remap the camera topics and override the model and target; everything else comes from the
config file (default: the installed config/reward.yaml; copy it and pass config:=/path/to/yours.yaml).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory("spatialvlm_ros")

# launch argument -> node parameter it overrides when given (empty: keep the config file's value)
OVERRIDES = {"model": "model.name_or_path", "backend": "model.backend", "base_url": "model.base_url", "target_object": "target_object"}


def _reward_node(context, *args, **kwargs):
    overrides = {param: LaunchConfiguration(arg).perform(context) for arg, param in OVERRIDES.items()}
    overrides = {param: value for param, value in overrides.items() if value}
    image = LaunchConfiguration("image").perform(context)
    return [Node(
        package="spatialvlm_ros",
        executable="reward_node",
        name="spatialvlm_reward",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config"), overrides],
        remappings=[
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("depth", LaunchConfiguration("depth")),
        ],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/color/image_raw",
                              description="colour image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/color/camera_info",
                              description="camera info topic of that image"),
        DeclareLaunchArgument("depth", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="depth aligned with the image (16UC1 mm or 32FC1 m)"),
        DeclareLaunchArgument("model", default_value="",
                              description="hub id or local checkpoint; empty: the config file's"),
        DeclareLaunchArgument("backend", default_value="",
                              description="vlm | geometric | remote; empty: the config file's"),
        DeclareLaunchArgument("base_url", default_value="",
                              description="remote backend: the server's API root, e.g. http://gpu-box:8000/v1"),
        DeclareLaunchArgument("target_object", default_value="",
                              description="what the gripper reaches for; empty: the config file's"),
        DeclareLaunchArgument("config", default_value=os.path.join(SHARE, "config", "reward.yaml"),
                              description="parameter file"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_shm_profile", default_value="true",
                              description="use the package's Fast DDS profile for camera-sized messages"),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               os.path.join(SHARE, "config", "fastdds_shm.xml"),
                               condition=IfCondition(LaunchConfiguration("use_shm_profile"))),
        OpaqueFunction(function=_reward_node),
    ])
