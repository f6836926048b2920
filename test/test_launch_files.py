"""The launch files: their shared definitions (always), and each one run with the launch API, waiting for
its nodes' services (where ROS's launch_ros is installed: a robot, a ROS container; PyPI has no wheel of
it, so on machines with only the PyPI wheels those tests are skipped and say so).
"""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

import pytest

from spatialvlm_ros import launch_support

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
SHARED_ARGUMENTS = {*launch_support.CAMERA_TOPICS, "namespace", "use_sim_time", "use_shm_profile", "managed"}


def _declared_arguments(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", getattr(c.func, "attr", "")) == "DeclareLaunchArgument"
            and c.args and isinstance(c.args[0], ast.Constant)}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_take_the_shared_arguments_and_copy_none(path):
    text = path.read_text()
    assert "ls.common_arguments()" in text  # namespace, use_sim_time, the Fast DDS profile
    assert "ls.camera_arguments()" in text
    assert "ls.required(" in text  # a failing node takes the launch down
    own = _declared_arguments(path)
    assert not own & SHARED_ARGUMENTS, own & SHARED_ARGUMENTS  # declared once, in launch_support
    assert "emulate_tty" not in text and "SetEnvironmentVariable" not in text


def test_recorder_launch_file_takes_output_dir():
    assert "output_dir" in _declared_arguments(ROOT / "launch" / "recorder.launch.py")
    assert "output_dir" in _declared_arguments(ROOT / "launch" / "spatialvlm.launch.py")


def test_fastdds_profile_is_set_only_when_the_user_has_none():
    ours = "/opt/share/spatialvlm_ros/config/fastdds_shm.xml"
    profile, line = launch_support.fastdds_profile_decision({}, True, ours)
    assert profile == ours and "camera's process too" in line
    for variable in launch_support.PROFILE_VARIABLES:
        profile, line = launch_support.fastdds_profile_decision({variable: "/home/me/mine.xml"}, True, ours)
        assert profile is None and "keeping your Fast DDS profile /home/me/mine.xml" in line
    profile, line = launch_support.fastdds_profile_decision({"FASTRTPS_DEFAULT_PROFILES_FILE": ""}, True, ours)
    assert profile == ours  # an empty variable is no profile
    profile, line = launch_support.fastdds_profile_decision({}, False, ours)
    assert profile is None and "use_shm_profile:=false" in line


def test_a_required_node_that_fails_fails_the_launch():
    failed = launch_support.required_exit_verdict("reward_node-1", 2, launch_shutting_down=False)
    assert isinstance(failed, launch_support.RequiredNodeFailed) and "status 2" in str(failed)
    assert launch_support.required_exit_verdict("reward_node-1", 0, False) == "reward_node-1 exited"
    # Ctrl-C: the launch is stopping already, whatever the nodes' statuses
    assert launch_support.required_exit_verdict("reward_node-1", -2, True) is None


# ------------------------------------------------------------------ run with the launch API

def _launch_api():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed here (it is not on PyPI; a ROS "
                                             "install has it): the launch files are run where it is")
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("spatialvlm_ros")
    except PackageNotFoundError:
        pytest.skip("spatialvlm_ros is not in the ament index: colcon build and source install/setup.bash")
    import launch
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    return launch, PythonLaunchDescriptionSource


def _run_launch(name: str, arguments: dict[str, str], until, timeout_s: float = 180.0) -> tuple[int, object]:
    """Run launch/<name> with ``arguments`` on the launch API in this (main) thread; ``until()`` runs in
    a thread and its result is returned; the launch is shut down when it returns or after ``timeout_s``."""
    launch, source = _launch_api()
    service = launch.LaunchService()
    include = launch.actions.IncludeLaunchDescription(
        source(str(ROOT / "launch" / name)), launch_arguments=list(arguments.items()))
    service.include_launch_description(launch.LaunchDescription([include]))
    result: dict[str, object] = {}

    def watch() -> None:
        try:
            result["value"] = until()
        finally:
            service.shutdown()

    watcher = threading.Thread(target=watch, daemon=True)
    killer = threading.Timer(timeout_s, service.shutdown)
    watcher.start()
    killer.start()
    try:
        code = service.run()
    finally:
        killer.cancel()
    watcher.join(1)
    return code, result.get("value")


def _services_appear(names: list[str], timeout_s: float = 150.0):
    def until() -> list[str]:
        import rclpy
        from rclpy.node import Node

        context = rclpy.Context()
        rclpy.init(context=context)
        node = Node("launch_test_watcher", context=context)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                found = {n for n, _ in node.get_service_names_and_types()}
                if all(n in found for n in names):
                    return sorted(names)
                time.sleep(0.5)
            return sorted(n for n in names if n in {s for s, _ in node.get_service_names_and_types()})
        finally:
            node.destroy_node()
            rclpy.shutdown(context=context)
    return until


MODEL = {"model": "builtin:tiny-spatial"}


@pytest.mark.slow
@pytest.mark.parametrize("name, arguments, services", [
    ("reward.launch.py", MODEL, ["/reset"]),
    ("reward.launch.py", {**MODEL, "managed": "true"}, ["/spatialvlm_reward/change_state"]),
    ("affordance.launch.py", MODEL, ["/check_gap"]),
    ("recorder.launch.py", {}, ["/record"]),
    ("spatialvlm.launch.py", MODEL, ["/reset", "/check_gap", "/record"]),
    ("spatialvlm.launch.py", {**MODEL, "single_process": "true", "recorder": "false"}, ["/reset", "/check_gap"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_launch_file_starts_its_nodes(tmp_path, name, arguments, services):
    arguments = {**arguments, "output_dir": str(tmp_path)} if "recorder" in name or name == "spatialvlm.launch.py" \
        else arguments
    code, found = _run_launch(name, arguments, _services_appear(services))
    assert found == sorted(services)
    assert code == 0  # shut down by the test: a clean exit


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reward.launch.py", "spatialvlm.launch.py"])
def test_a_model_that_cannot_be_loaded_ends_the_launch_with_a_failure(name):
    started = time.monotonic()
    never = threading.Event()
    code, _ = _run_launch(name, {"model": "/does/not/exist"}, lambda: never.wait(120))
    never.set()
    assert code != 0
    assert time.monotonic() - started < 110  # ended by the node's failure, not by the test's timeout


def test_the_launch_tests_say_why_they_are_skipped_here():
    """Where launch_ros is missing the run tests skip with the reason (not silently pass)."""
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        with pytest.raises(pytest.skip.Exception, match="launch_ros is not installed here"):
            _launch_api()
    else:
        assert os.environ.get("AMENT_PREFIX_PATH")
