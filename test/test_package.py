"""The package as users meet it: generated docs and config agree with params.py, launch files name only
things that exist, the core stays ROS-free, and the build metadata is complete."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from spatialvlm_ros.params import ALL_PARAM_SETS

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = spatialvlm_ros." in node.value:
            scripts.add(node.value.split("=")[0].strip())
    return scripts


def test_generated_config_and_readme_tables_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_params_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("param_set", ALL_PARAM_SETS, ids=lambda p: p.node_name)
def test_every_parameter_is_documented_and_its_default_valid(param_set):
    for spec in param_set.specs:
        assert spec.description.strip(), spec.name
        assert spec.validate(spec.default) is None, spec.name
    assert f"<!-- params:{param_set.node_name} -->" in (ROOT / "README.md").read_text()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


@pytest.mark.parametrize("param_set", ALL_PARAM_SETS, ids=lambda p: p.node_name)
def test_config_yaml_matches_params(param_set):
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_params_docs import CONFIG_FILES

    data = yaml.safe_load((ROOT / "config" / CONFIG_FILES[param_set.node_name]).read_text())
    values = _flatten(data[param_set.node_name]["ros__parameters"])
    assert values == param_set.defaults()


LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_name_only_what_exists(path):
    tree = ast.parse(path.read_text())  # parses
    names = {p.node_name: p for p in ALL_PARAM_SETS}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    # executables: the names launch_support.package_node is given (directly or through a variable)
    executables = {s for s in strings if s.endswith(("_node", "_node_managed"))}
    assert executables, "a launch file should start something"
    assert executables <= console_scripts(), executables - console_scripts()
    for s in strings:
        if s.endswith((".yaml", ".xml")):
            assert (ROOT / "config" / Path(s).name).is_file(), s
    node_names = {kw.value.value for c in calls for kw in c.keywords
                  if kw.arg == "name" and isinstance(kw.value, ast.Constant)}
    assert node_names <= set(names), node_names - set(names)
    # every parameter a launch file overrides (its OVERRIDES table) is one a node declares
    declared = {n for p in ALL_PARAM_SETS for n in p.names()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "OVERRIDES" for t in node.targets):
            overridden = ast.literal_eval(node.value)
            assert set(overridden.values()) <= declared, set(overridden.values()) - declared


def test_reward_launch_file_exists():
    assert (ROOT / "launch" / "reward.launch.py") in LAUNCH_FILES


def test_package_xml_and_ament_layout():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "spatialvlm_ros"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "std_msgs", "std_srvs", "sensor_msgs", "diagnostic_msgs", "launch_ros"} <= deps
    assert root.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "spatialvlm_ros").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/spatialvlm_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/spatialvlm_ros"
    assert {"reward_node"} <= console_scripts()


def test_core_never_imports_rclpy():
    for path in (ROOT / "spatialvlm_ros" / "spatial").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs") for m in mods), path


def test_package_import_is_light():
    """Heavy imports happen where a model is built, not at package import (STYLE.md rule 5)."""
    code = ("import sys, spatialvlm_ros.spatial, spatialvlm_ros.params, spatialvlm_ros.spatial.estimator;"
            "print(sorted(m for m in ('torch', 'transformers', 'rclpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_colcon_build_installs_what_ros2_run_and_launch_look_for(tmp_path):
    """colcon build (as on a robot) puts executables under lib/<pkg> and launch/config under share."""
    import shutil

    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.fail("colcon is part of requirements-test.txt; run scripts/setup_env.sh")
    src = tmp_path / "src" / "spatialvlm_ros"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout: copy the tree
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.pyc", ".cache"))
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    result = subprocess.run([str(colcon), "build", "--packages-select", "spatialvlm_ros"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "install" / "spatialvlm_ros"
    installed = {p.name for p in (prefix / "lib" / "spatialvlm_ros").iterdir()}
    assert console_scripts() <= installed
    share = prefix / "share" / "spatialvlm_ros"
    assert {p.name for p in LAUNCH_FILES} <= {p.name for p in (share / "launch").iterdir()}
    assert {"reward.yaml", "fastdds_shm.xml"} <= {p.name for p in (share / "config").iterdir()}
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "spatialvlm_ros").is_file()
