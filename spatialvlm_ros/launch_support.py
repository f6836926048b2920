"""What every launch file of the package shares: camera arguments and remappings, use_sim_time, the
Fast DDS profile, parameter overrides, and the rule that a model node's death takes the launch down.

Imported by the files in launch/. ROS's ``launch`` and ``launch_ros`` (a robot's ROS install has them,
PyPI does not) are imported inside the functions that build actions, so the decisions here (the
profile, the exit rule) are testable where they are missing.
"""

from __future__ import annotations

import os
from typing import Any

PACKAGE = "spatialvlm_ros"
# The variables Fast DDS reads its XML profile from (2.x reads the first, 3.x the second).
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")

# camera input -> (default topic, description); the nodes subscribe these relative names.
CAMERA_TOPICS = {
    "image": ("/camera/color/image_raw", "colour image topic (sensor_msgs/Image)"),
    "camera_info": ("/camera/color/camera_info", "camera info topic of that image"),
    "depth": ("/camera/aligned_depth_to_color/image_raw", "depth aligned with the image (16UC1 mm or 32FC1 m)"),
}


def share_file(*parts: str) -> str:
    """A file installed under share/spatialvlm_ros (config/reward.yaml, ...)."""
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def camera_arguments() -> list[Any]:
    from launch.actions import DeclareLaunchArgument

    return [DeclareLaunchArgument(name, default_value=default, description=description)
            for name, (default, description) in CAMERA_TOPICS.items()]


def camera_remappings(context: Any) -> list[tuple[str, str]]:
    """The camera inputs remapped to the launch arguments (compressed frames follow ``image``)."""
    from launch.substitutions import LaunchConfiguration

    image = LaunchConfiguration("image").perform(context)
    return [
        ("image", image),
        ("image/compressed", image + "/compressed"),
        ("camera_info", LaunchConfiguration("camera_info").perform(context)),
        ("depth", LaunchConfiguration("depth").perform(context)),
    ]


def common_arguments() -> list[Any]:
    """namespace, use_sim_time, use_shm_profile, and the action that applies the Fast DDS profile."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="true: the nodes follow /clock (simulation, bag replay)"),
        DeclareLaunchArgument(
            "use_shm_profile", default_value="true",
            description="use the package's Fast DDS profile for camera-sized messages, unless "
                        "FASTRTPS_DEFAULT_PROFILES_FILE (or FASTDDS_...) is already set: yours wins"),
        OpaqueFunction(function=_shm_profile),
    ]


def fastdds_profile_decision(environ: dict[str, str], wanted: bool, profile: str) -> tuple[str | None, str]:
    """(the profile to export, or None to leave the environment alone; a line saying what was decided).

    A profile the user exported already is kept: replacing it silently would undo their transport set-up.
    """
    if not wanted:
        return None, "use_shm_profile:=false: Fast DDS runs with its own defaults or your profile"
    own = next((environ[v] for v in PROFILE_VARIABLES if environ.get(v)), None)
    if own is not None:
        return None, f"keeping your Fast DDS profile {own} (the package's config/fastdds_shm.xml is not used)"
    return profile, (f"Fast DDS profile {profile}: export FASTRTPS_DEFAULT_PROFILES_FILE to it in the "
                     "camera's process too, or its frames to these nodes may be lost")


def _shm_profile(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
    from launch.actions import LogInfo, SetEnvironmentVariable

    profile, line = fastdds_profile_decision(dict(os.environ), is_true(context, "use_shm_profile"),
                                             share_file("config", "fastdds_shm.xml"))
    actions = [] if profile is None else [SetEnvironmentVariable(v, profile) for v in PROFILE_VARIABLES]
    return [*actions, LogInfo(msg=f"[spatialvlm_ros] {line}")]


def overrides(context: Any, table: dict[str, str]) -> dict[str, str]:
    """Node parameters from the launch arguments that were given (empty: keep the config file's)."""
    from launch.substitutions import LaunchConfiguration

    values = {param: LaunchConfiguration(arg).perform(context) for arg, param in table.items()}
    return {param: value for param, value in values.items() if value}


def is_true(context: Any, argument: str) -> bool:
    from launch.substitutions import LaunchConfiguration

    return LaunchConfiguration(argument).perform(context).strip().lower() in ("true", "1", "yes", "on")


def use_sim_time(context: Any) -> dict[str, bool]:
    return {"use_sim_time": is_true(context, "use_sim_time")}


def managed_argument() -> list[Any]:
    from launch.actions import DeclareLaunchArgument

    return [DeclareLaunchArgument(
        "managed", default_value="false",
        description="true: start the lifecycle (managed) variant, which waits unconfigured for "
                    "`ros2 lifecycle set` or a lifecycle manager (nav2_lifecycle_manager)")]


def package_node(context: Any, executable: str, parameters: list[Any], name: str | None = None,
                 remappings: list[tuple[str, str]] | None = None, condition: Any = None) -> Any:
    """A launch_ros Node of this package with the shared namespace, sim time, camera remappings and log
    settings."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    kwargs: dict[str, Any] = {} if name is None else {"name": name}
    return Node(
        package=PACKAGE,
        executable=executable,
        namespace=LaunchConfiguration("namespace"),
        parameters=[*parameters, use_sim_time(context)],
        remappings=camera_remappings(context) if remappings is None else remappings,
        condition=condition,
        output="screen",
        # A tty keeps the output line-buffered; colour codes are off unless the user asked for them.
        emulate_tty=True,
        additional_env={"RCUTILS_COLORIZED_OUTPUT": os.environ.get("RCUTILS_COLORIZED_OUTPUT", "0")},
        **kwargs,
    )


def required(node: Any) -> Any:
    """The launch ends when ``node`` ends; with a non-zero status when the node failed.

    ``ros2 launch`` returns 1 when an action raises, and 0 after a Shutdown action: a node that dies
    (a model that cannot be loaded exits 2) therefore raises, a node that ends cleanly shuts down.
    """
    from launch.actions import RegisterEventHandler
    from launch.event_handlers import OnProcessExit

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_required_exit))


class RequiredNodeFailed(RuntimeError):
    """A node the launch exists for exited with a non-zero status."""


def _on_required_exit(event: Any, context: Any) -> list[Any] | None:
    from launch.actions import Shutdown

    verdict = required_exit_verdict(getattr(event.action, "name", "a node"), event.returncode,
                                    context.is_shutdown)
    if isinstance(verdict, RequiredNodeFailed):
        raise verdict
    return None if verdict is None else [Shutdown(reason=verdict)]


def required_exit_verdict(name: str, returncode: int, launch_shutting_down: bool) -> RequiredNodeFailed | str | None:
    """What a required node's exit means: None (the launch is stopping anyway), a shutdown reason (a
    clean exit), or the failure to raise (a non-zero status)."""
    if launch_shutting_down:
        return None
    if returncode != 0:
        return RequiredNodeFailed(f"{name} exited with status {returncode}; stopping the launch "
                                  "(its log above says why)")
    return f"{name} exited"
