"""Test-wide ROS environment: a private DDS domain, a temporary log dir, the package's Fast DDS profile.

Set before rclpy is imported anywhere, so every test process (and the node processes they start,
which inherit os.environ) uses them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One domain per test session so parallel runs on one machine do not hear each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 200))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="spatialvlm_roslog_"))
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint saved with save_pretrained (built once per session)."""
    from spatialvlm_ros.tiny_models import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny random LLaVA checkpoint saved with save_pretrained (built once per session)."""
    from spatialvlm_ros.tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="session")
def model_server(tmp_path_factory):
    """ONE real OpenAI-compatible server per session (`transformers serve` on the shipped tiny spatial
    model, CPU, a free 127.0.0.1 port), shared by every test that needs one; stopped by PID."""
    from model_server import ModelServer

    from spatialvlm_ros.models import shipped_model_path

    server = ModelServer(shipped_model_path(), tmp_path_factory.mktemp("model_server") / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised for one test module's nodes (imported here, after the environment above is set)."""
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()
