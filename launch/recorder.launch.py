"""Start the episode recorder on a robot's camera, depth, joint states and reward topics.

    ros2 launch spatialvlm_ros recorder.launch.py image:=/camera/color/image_raw
    ros2 service call /record std_srvs/srv/SetBool "{data: true}"    # start an episode
    ros2 param set /spatialvlm_recorder target_object "the orange tea bottle"
    ros2 service call /record std_srvs/srv/SetBool "{data: false}"   # finalize it

Arguments remap the recorded topics; everything else (output_dir, the topic list, task,
target_object, limits) comes from the config file (default: the installed config/recorder.yaml;
copy it and pass config:=/path/to/yours.yaml).
"""

# ruff: noqa: I001 - isort takes `launch` for this repository's launch/ folder (first-party)
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = get_package_share_directory("spatialvlm_ros")

# recorder topic name -> (default remapping, description)
TOPICS = {
    "image": ("/camera/color/image_raw", "colour image topic (sensor_msgs/Image)"),
    "camera_info": ("/camera/color/camera_info", "camera info of that image"),
    "depth": ("/camera/aligned_depth_to_color/image_raw", "depth aligned with the image"),
    "joint_states": ("/joint_states", "the arm's joint states"),
    "reward": ("reward", "reward_node's reward (relative: the recorder's namespace)"),
    "reward_stamped": ("reward_stamped", "reward_node's reward with its frame's header"),
    "reward_info": ("reward_info", "reward_node's reward_info"),
}


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in TOPICS.items()],
        DeclareLaunchArgument("config",
                              default_value=os.path.join(SHARE, "config", "recorder.yaml"),
                              description="parameter file"),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_shm_profile", default_value="true",
                              description="use the package's Fast DDS profile for camera frames"),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               os.path.join(SHARE, "config", "fastdds_shm.xml"),
                               condition=IfCondition(LaunchConfiguration("use_shm_profile"))),
        Node(
            package="spatialvlm_ros",
            executable="recorder_node",
            name="spatialvlm_recorder",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config")],
            remappings=[(name, LaunchConfiguration(name)) for name in TOPICS],
            output="screen",
            emulate_tty=True,
        ),
    ])
