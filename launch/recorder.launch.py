"""Start the episode recorder on a robot's camera, depth, joint states and reward topics.

    ros2 launch spatialvlm_ros recorder.launch.py image:=/camera/color/image_raw output_dir:=/data/episodes
    ros2 service call /record std_srvs/srv/SetBool "{data: true}"    # start an episode
    ros2 param set /spatialvlm_recorder target_object "the orange tea bottle"
    ros2 service call /record std_srvs/srv/SetBool "{data: false}"   # finalize it

Arguments remap the recorded topics and override output_dir; everything else (the topic list, task,
target_object, limits) comes from the config file (default: the installed config/recorder.yaml;
copy it and pass config:=/path/to/yours.yaml). The launch ends, with a non-zero status, when the
recorder fails.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from spatialvlm_ros import launch_support as ls

# recorder topics beside the camera's -> (default remapping, description)
TOPICS = {
    "joint_states": ("/joint_states", "the arm's joint states"),
    "reward": ("reward", "reward_node's reward (relative: the recorder's namespace)"),
    "reward_stamped": ("reward_stamped", "reward_node's reward with its frame's header"),
    "reward_info": ("reward_info", "reward_node's reward_info"),
}
# launch argument -> node parameter it overrides when given (empty: keep the config file's value)
OVERRIDES = {"output_dir": "output_dir", "target_object": "target_object"}


def _nodes(context, *args, **kwargs):
    remappings = ls.camera_remappings(context) + [
        (name, LaunchConfiguration(name).perform(context)) for name in TOPICS]
    node = ls.package_node(context, "recorder_node", name="spatialvlm_recorder", remappings=remappings,
                           parameters=[LaunchConfiguration("config"), ls.overrides(context, OVERRIDES)])
    return [node, ls.required(node)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *ls.camera_arguments(),
        *[DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in TOPICS.items()],
        DeclareLaunchArgument("output_dir", default_value="",
                              description="where episodes are written; empty: the config file's"),
        DeclareLaunchArgument("target_object", default_value="",
                              description="the episodes' target object; empty: the config file's"),
        DeclareLaunchArgument("config", default_value=ls.share_file("config", "recorder.yaml"),
                              description="parameter file"),
        *ls.common_arguments(),
        OpaqueFunction(function=_nodes),
    ])
