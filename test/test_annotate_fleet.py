"""spatialvlm_annotate off the box: the remote backend (a real `transformers serve`) and a local Ray instance
(`--ray local`, two actors each with its own copy of the shipped tiny spatial model). Both must write the
rows the single-process, in-process run writes, with the same resume and no-duplicate guarantees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from model_server import free_port
from test_annotate import write_episode

from spatialvlm_ros import annotate as cli
from spatialvlm_ros.spatial.annotation import ANNOTATIONS_FILE
from spatialvlm_ros.spatial.synthetic_scene import ApproachScene

VENV_BIN = Path(sys.executable).parent
N = 8
COLUMNS = ["frame_index", "stamp_ns", "question", "raw_answers", "sample_distances_m", "distance_m", "error",
           "reward_negative_distance", "reward_progress"]
TINY = ["--model", "builtin:tiny-spatial", "--model.max_new_tokens", "16", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def episode(tmp_path_factory) -> Path:
    scene = ApproachScene(224, 168, frames=N)
    rgbs = [scene.render(i).rgb for i in range(N)]
    return write_episode(tmp_path_factory.mktemp("fleet") / "ep", rgbs, target=scene.target_description)


@pytest.fixture(scope="module")
def single_process(episode, tmp_path_factory) -> Path:
    """The reference: every frame, one process, the model in it."""
    out = tmp_path_factory.mktemp("single")
    assert cli.main([str(episode), *TINY, "--model.device", "cpu", "--output", str(out)]) == cli.EXIT_OK
    return out


def private_ray_env() -> tuple[str, dict[str, str]]:
    """(Ray's directory, the environment) for a command that starts a private local Ray instance: Ray's
    own files in a short directory (its socket paths must stay under 108 bytes), and no auth token
    written for an instance that dies with the command."""
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    return ray_dir, dict(os.environ, RAY_AUTH_MODE="disabled", OMP_WAIT_POLICY="PASSIVE", RAY_TMPDIR=ray_dir)


def rows(out: Path) -> list[dict]:
    return pq.read_table(out / "ep" / ANNOTATIONS_FILE).select(COLUMNS).to_pylist()


def test_remote_backend_writes_the_in_process_rows(model_server, episode, single_process, tmp_path, capsys) -> None:
    out = tmp_path / "remote"
    args = [str(episode), *TINY, "--model.backend", "remote", "--model.base_url", model_server.base_url,
            "--model.name_or_path", model_server.model_id, "--model.max_in_flight", "2", "--output", str(out)]
    assert cli.main(args) == cli.EXIT_OK
    want = rows(single_process)
    assert [r["distance_m"] for r in want].count(None) < N
    assert rows(out) == want


def test_an_unreachable_server_stops_the_batch_job_at_once(episode, tmp_path, capsys) -> None:
    args = [str(episode), "--model.backend", "remote", "--model.base_url", f"http://127.0.0.1:{free_port()}/v1",
            "--output", str(tmp_path / "none"), "--no-progress"]
    assert cli.main(args) == cli.EXIT_MODEL
    assert "cannot reach the model server" in capsys.readouterr().err
    assert not (tmp_path / "none" / "ep" / ANNOTATIONS_FILE).exists()


@pytest.mark.slow
def test_ray_local_instance_continues_a_run_and_writes_the_single_process_rows(episode, single_process,
                                                                               tmp_path) -> None:
    """Half the frames in one process (--every 2), then the rest on a local Ray instance with two actors:
    the Ray run answers only the 4 missing frames, and the result is the single-process run's, row for row."""
    out = tmp_path / "ray"
    assert cli.main([str(episode), *TINY, "--model.device", "cpu", "--every", "2", "--output", str(out)]) == 0
    ray_dir, env = private_ray_env()
    run = subprocess.run(
        [str(VENV_BIN / "spatialvlm_annotate"), str(episode), *TINY, "--model.device", "cpu", "--output",
         str(out), "--ray", "local", "--ray-actors", "2"],
        capture_output=True, text=True, env=env, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 actor(s)" in run.stderr and f"{N} annotated (4 new)" in run.stdout, run.stdout + run.stderr
    assert rows(out) == rows(single_process)
    again = subprocess.run(
        [str(VENV_BIN / "spatialvlm_annotate"), str(episode), *TINY, "--output", str(out), "--ray", "local",
         "--ray-actors", "2"], capture_output=True, text=True, env=env, timeout=120)
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert again.returncode == 0 and "(0 new)" in again.stdout and "(up to date)" in again.stdout, again.stdout
