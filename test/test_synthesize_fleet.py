"""spatialvlm_synthesize on a local Ray instance (`--ray local`, two actors, each loading its own copy of a
tiny random OWLv2 by from_pretrained): the rows must be the single-process run's, with the same resume
and no-duplicate guarantees."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_annotate import write_episode
from test_annotate_fleet import VENV_BIN, private_ray_env
from test_synthesize import VOCABULARY, _episodes

from spatialvlm_ros import synthesize as cli
from spatialvlm_ros.spatial.vqa.dataset import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[str]]:
    """Two episodes with recorded depth, and the options every run shares: the real (tiny, random)
    detector at threshold 0, so that every frame has objects and questions to compare."""
    from spatialvlm_ros.tiny_models import build_tiny_owlv2

    root = tmp_path_factory.mktemp("synth_fleet")
    owl = build_tiny_owlv2(root / "owl")
    for i, e in enumerate(_episodes(2, frames=4, seed=3)):
        write_episode(root / "eps" / f"ep{i}", [r.rgb for r in e.frames], target="pink box",
                      depths=[r.depth_m for r in e.frames])
    common = ["--objects", *VOCABULARY[:4], "--min-change", "0", "--no-progress", "--batch-size", "2",
              "--model.detector", str(owl), "--model.detector_threshold", "0", "--model.device", "cpu",
              "--model.depth_source", "topic"]
    return root / "eps", common


def table(out: Path) -> list[dict]:
    rows = read_table(out).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def test_ray_continues_a_single_process_run_and_writes_its_rows(setup, tmp_path) -> None:
    eps, common = setup
    reference = tmp_path / "single"
    assert cli.main([str(eps), "-o", str(reference), *common]) == cli.EXIT_OK
    want = table(reference)
    assert len(want) >= 8 and len({r["source"] for r in want}) == 2  # something real to compare

    out = tmp_path / "ray"
    assert cli.main([str(eps / "ep0"), "-o", str(out), *common]) == cli.EXIT_OK  # half in one process
    ray_dir, env = private_ray_env()
    try:
        run = subprocess.run([str(VENV_BIN / "spatialvlm_synthesize"), str(eps), "-o", str(out), *common,
                              "--ray", "local", "--ray-actors", "2"],
                             capture_output=True, text=True, env=env, timeout=280)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "2 actor(s)" in run.stderr, run.stderr
        assert "ep0: " in run.stdout and "(up to date)" in run.stdout.split("ep0: ")[1].splitlines()[0], run.stdout
        got = table(out)
        assert [r["id"] for r in got] == [r["id"] for r in want]  # nothing missing, nothing twice
        for g, w in zip(got, want, strict=True):
            for key in ("question", "answer", "kind", "value_text", "source", "frame_index", "detector",
                        "settings_hash"):
                assert g[key] == w[key], (key, g["id"])
            assert g["image"]["bytes"] == w["image"]["bytes"]
            if w["value"] is None:
                assert g["value"] is None
            else:
                assert g["value"] == pytest.approx(w["value"], rel=1e-4, abs=1e-6)
            assert np.allclose([o["centre_m"] for o in g["objects"]], [o["centre_m"] for o in w["objects"]],
                               rtol=1e-4, atol=1e-6)
        again = subprocess.run([str(VENV_BIN / "spatialvlm_synthesize"), str(eps), "-o", str(out), *common,
                                "--ray", "local", "--ray-actors", "2"],
                               capture_output=True, text=True, env=env, timeout=200)
        assert again.returncode == 0 and again.stdout.count("(up to date)") == 2, again.stdout + again.stderr
        assert table(out) == got
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_ray_options_need_ray_and_sane_values(setup, tmp_path, capsys) -> None:
    eps, common = setup
    for bad, why in ((["--ray-actors", "2"], "need --ray"), (["--ray", "local", "--ray-actors", "0"], "at least 1"),
                     (["--ray", "local", "--ray-gpus-per-actor", "-1"], "must not be negative")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(eps), "-o", str(tmp_path / "x"), *common, *bad])
        assert exit_info.value.code == cli.EXIT_USAGE
        assert why in capsys.readouterr().err
