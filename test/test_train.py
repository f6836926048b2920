"""spatialvlm_train: data and labels, a short training run whose loss falls, exact resumption, LoRA
fine-tuning of an existing checkpoint, and the saved folder loading through the normal model path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialvlm_ros.spatial.estimator import ModelConfig, build_estimator
from spatialvlm_ros.train import Trainer, build_parser, main
from spatialvlm_ros.training.data import Collator, aux_targets, training_batch
from spatialvlm_ros.training.tiny_spatial import (
    AUX_LAYOUT,
    AUX_SIZE,
    CLASSES,
    GRID_COLS,
    GRID_ROWS,
    LENGTH_SCALE,
    build_tiny_spatial,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_spatial():
    return build_tiny_spatial(seed=0)


def test_tokenizer_spells_digits_and_the_model_is_tiny(tiny_spatial):
    processor, model = tiny_spatial
    tok = processor.tokenizer
    assert tok.tokenize("about 35 cm") == ["about", "Ġ", "3", "5", "Ġcm"]
    assert tok.tokenize("roughly 1.25 m")[2:6] == ["1", ".", "2", "5"]
    assert tok.decode(tok("How far is the robot gripper from the red cube?")["input_ids"]) == \
        "How far is the robot gripper from the red cube?"
    assert 1.5e6 < sum(p.numel() for p in model.parameters()) < 3.5e6
    # A 4:3 camera frame, and a training frame, become 168x140 px (WxH): 30 merged image tokens.
    for h, w in ((480, 640), (168, 224)):
        out = processor.image_processor(images=[np.zeros((h, w, 3), np.uint8)], return_tensors="pt")
        assert out["image_grid_thw"].tolist() == [[1, 2 * GRID_ROWS, 2 * GRID_COLS]] == [[1, 10, 12]]


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = training_batch(1, 7, 3), training_batch(1, 7, 3)
    assert [s.qa for s in a] == [s.qa for s in b]
    assert all((x.image == y.image).all() for x, y in zip(a, b, strict=True))
    assert [s.qa for s in training_batch(1, 8, 3)] != [s.qa for s in a]


def test_labels_cover_exactly_the_answer_and_aux_targets_the_vision_tokens(tiny_spatial):
    processor, _ = tiny_spatial
    samples = training_batch(0, 0, 4)
    batch = Collator(processor, aux=True)(samples)
    tok = processor.tokenizer
    for i, s in enumerate(samples):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert tok.decode(labelled) == s.qa.answer + "<|im_end|>"
    assert batch["aux_targets"].shape == (4 * GRID_ROWS * GRID_COLS, AUX_SIZE)
    # Region targets: the gripper's coverage where it is drawn; its TCP and every visible object's
    # distance to it in every region (the scene summary any token can hand over).
    t = aux_targets(samples[0].frame, GRID_ROWS, GRID_COLS)
    cover = t[:, AUX_LAYOUT["gripper_cover"]]
    assert cover.max() > 0 and (cover >= 0).all() and (cover <= 1).all()
    for part in ("gripper_xyz", "class_gripper_dist", "class_seen"):
        assert np.allclose(t[:, AUX_LAYOUT[part]], t[0, AUX_LAYOUT[part]])
    scene = samples[0].frame.scene
    for obj in scene.objects:
        c = CLASSES.index(f"{obj.colour} {obj.shape}")
        if t[0, AUX_LAYOUT["class_seen"].start + c]:
            assert t[0, AUX_LAYOUT["class_gripper_dist"].start + c] * LENGTH_SCALE == pytest.approx(
                scene.gripper_distance(obj), rel=1e-5)


def _args(tmp_path: Path, *extra: str):
    return build_parser().parse_args([str(tmp_path / "model"), "--steps", "8", "--batch-size", "4",
                                      "--warmup", "2", "--render-size", "224x168", "--quiet", *extra])


def test_short_training_run_loss_falls(tmp_path):
    trainer = Trainer(_args(tmp_path, "--lr", "3e-3"))
    trainer.build()
    assert trainer.train()
    losses = [answer for answer, _ in trainer.history]
    auxes = [aux for _, aux in trainer.history]
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.8 * losses[0]  # seeded: 6.08 -> 3.97 here
    assert np.mean(auxes[-3:]) < auxes[0]
    out = trainer.save_model()
    # A plain transformers checkpoint: no auxiliary head in it, loadable by the estimator.
    assert not any("aux" in line for line in (out / "config.json").read_text().splitlines())
    est = build_estimator(ModelConfig(name_or_path=str(out), max_new_tokens=8))
    assert type(est.model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = Trainer(_args(tmp_path / "a", "--steps", "4"))
    straight.build()
    straight.train()
    first = Trainer(_args(tmp_path / "b", "--steps", "4", "--stop-after", "2"))
    first.build()
    assert not first.train() and first.state_path.is_file()
    assert first.state_path.parent == tmp_path / "b" and not (tmp_path / "b" / "model").exists()
    resumed = Trainer(_args(tmp_path / "b", "--steps", "4", "--resume"))
    resumed.build()
    resumed.load_state()
    assert resumed.step == 2
    assert resumed.train()
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    mismatched = Trainer(_args(tmp_path / "b", "--steps", "4", "--batch-size", "2", "--resume"))
    mismatched.build()
    with pytest.raises(SystemExit, match="--batch-size was 4"):
        mismatched.load_state()


def test_lora_fine_tuning_with_unfrozen_vision_merges_into_a_plain_checkpoint(tmp_path, tiny_qwen_dir):
    pytest.importorskip("peft")
    out = tmp_path / "ft"
    code = main([str(out), "--init", str(tiny_qwen_dir), "--lora-rank", "4", "--unfreeze-vision",
                 "--aux-weight", "1", "--steps", "2", "--batch-size", "2", "--render-size", "224x168",
                 "--quiet", "--eval-scenes", "2", "--eval-per-kind", "1", "--eval-trajectories", "1",
                 "--eval-frames", "3"])
    assert code == 0
    names = json.dumps(json.loads((out / "model.safetensors.index.json").read_text())) \
        if (out / "model.safetensors.index.json").exists() else ""
    assert "lora" not in names
    from safetensors.torch import load_file

    tuned = load_file(str(out / "model.safetensors"))
    base = load_file(str(tiny_qwen_dir / "model.safetensors"))
    assert not any("lora" in k for k in tuned)
    vision = [k for k in base if "visual.blocks.0.attn.qkv.weight" in k][0]
    text = [k for k in base if "layers.0.self_attn.q_proj.weight" in k][0]
    assert not torch.equal(tuned[vision], base[vision])  # the vision encoder was trained
    assert not torch.equal(tuned[text], base[text])  # the LoRA update was merged into the weights
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["heldout"]) >= {"gripper_distance", "object_distance", "width"}
    assert metrics["training"]["trained_parameters"] < metrics["training"]["parameters"]


def test_fine_tuning_options_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="--lora-rank is for fine-tuning"):
        Trainer(_args(tmp_path, "--lora-rank", "4"))
    with pytest.raises(SystemExit):
        build_parser().parse_args([str(tmp_path), "--mix", "height=1"])
