"""The VLM backend on tiny random checkpoints of two real families, loaded through from_pretrained.

Only the weights are fake: loading, prompting, batching, generation, decoding, parsing and the median
are the code users run. Where a number must come out, the decoded text (not generate) is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from spatialvlm_ros.spatial import estimator as estimator_mod
from spatialvlm_ros.spatial.estimator import (
    Estimate,
    Frame,
    ModelConfig,
    ModelLoadError,
    SpatialQuery,
    build_estimator,
    shared_estimator,
)
from spatialvlm_ros.spatial.vlm import VLMEstimator, resolve_device, resolve_dtype

NEW_TOKENS = 8  # enough to see real generation; short enough to keep the file fast on 2 cores


def _config(path, **kw) -> ModelConfig:
    return ModelConfig(name_or_path=str(path), max_new_tokens=NEW_TOKENS, **kw)


def _query(target: str, text: str | None = None) -> SpatialQuery:
    return SpatialQuery("distance", "the robot gripper", target,
                        text or f"How far is the robot gripper from {target}?")


def _frames(sizes, seed=0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir) -> VLMEstimator:
    return build_estimator(_config(tiny_qwen_dir))


@pytest.fixture(scope="module")
def llava(tiny_llava_dir) -> VLMEstimator:
    return build_estimator(_config(tiny_llava_dir))


@pytest.fixture(params=["qwen", "llava"])
def est(request) -> VLMEstimator:
    return request.getfixturevalue(request.param)


class _Spy:
    """Stands in for the processor: records each call's images, delegates everything."""

    def __init__(self, real) -> None:
        self._real = real
        self.calls: list[dict] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self._real(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _record_generate(monkeypatch, est: VLMEstimator) -> list[dict]:
    calls: list[dict] = []
    real = est.model.generate

    def generate(**kwargs):
        out = real(**kwargs)
        calls.append({"kwargs": kwargs, "rows": out.shape[0],
                      "inference_mode": torch.is_inference_mode_enabled(),
                      "grad": torch.is_grad_enabled()})
        return out

    monkeypatch.setattr(est.model, "generate", generate)
    return calls


# ------------------------------------------------------------------ loading


@pytest.mark.parametrize("family, processor_cls, model_cls", [
    ("qwen", "Qwen2_5_VLProcessor", "Qwen2_5_VLForConditionalGeneration"),
    ("llava", "LlavaProcessor", "LlavaForConditionalGeneration"),
])
def test_both_families_load_through_from_pretrained(request, family, processor_cls, model_cls):
    est = request.getfixturevalue(family)
    path = request.getfixturevalue(f"tiny_{family}_dir")
    assert isinstance(est, VLMEstimator)
    assert est.backend == "vlm" and est.model_name == str(path)
    assert type(est.processor).__name__ == processor_cls
    assert type(est.model).__name__ == model_cls
    cuda = torch.cuda.is_available()
    assert est.device == ("cuda" if cuda else "cpu")
    assert est.dtype == (torch.bfloat16 if cuda else torch.float32)
    assert {p.dtype for p in est.model.parameters()} == {est.dtype}
    assert {p.device.type for p in est.model.parameters()} == {est.device}
    assert not est.model.training
    assert est.processor.tokenizer.padding_side == "left"
    assert est.processor.tokenizer.pad_token is not None


def test_left_padding_is_forced_even_when_the_checkpoint_says_right(tmp_path, tiny_qwen_dir):
    ckpt = shutil.copytree(tiny_qwen_dir, tmp_path / "right_padded")
    cfg_file = ckpt / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["padding_side"] = "right"
    cfg_file.write_text(json.dumps(cfg))
    est = build_estimator(_config(ckpt))
    tok = est.processor.tokenizer
    assert tok.padding_side == "left"
    batch = tok(["short", "a much longer prompt than the other one"], padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # the short prompt is padded on the left
    assert bool(mask[1].all())


def test_resolve_device_and_dtype(monkeypatch):
    from spatialvlm_ros.spatial import vlm

    monkeypatch.setattr(vlm.torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16
    monkeypatch.setattr(vlm.torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float32", "cuda") == torch.float32


# ------------------------------------------------------------------ batching and generation


def test_batch_of_frames_and_questions_matches_one_at_a_time(est, monkeypatch):
    frames = _frames([(48, 64), (80, 96), (120, 60)])  # three different sizes in one batch
    queries = [_query("the bottle"),
               _query("the orange tea bottle on the table",
                      "How far is the robot gripper from the orange tea bottle on the table? "
                      "Answer in metres.")]
    items = [(f, q) for f in frames for q in queries]
    calls = _record_generate(monkeypatch, est)
    batched = est.estimate(items)
    assert len(calls) == 1 and calls[0]["rows"] == len(items)  # one generate() for all six
    assert len(batched) == len(items)
    for (_, q), e in zip(items, batched, strict=True):
        assert isinstance(e, Estimate) and e.query is q
        assert len(e.raw_answers) == 1 and len(e.sample_values_m) == 1
        assert not (e.reason or "").startswith("model failed")
    # Greedy decoding with correct (left) padding answers each item as if it were alone.
    singles = [est.estimate([item])[0] for item in items]
    assert [e.raw_answers for e in batched] == [e.raw_answers for e in singles]
    assert len({e.raw_answers[0] for e in batched}) > 1  # the items really differ, so order shows


def test_samples_use_num_return_sequences_and_give_that_many_answers(est, monkeypatch):
    items = [(f, _query("the bottle")) for f in _frames([(48, 64), (64, 48)])]
    calls = _record_generate(monkeypatch, est)
    results = est.estimate(items, samples=3)
    assert len(calls) == 1
    kwargs = calls[0]["kwargs"]
    assert kwargs["num_return_sequences"] == 3 and kwargs["do_sample"] is True
    assert kwargs["temperature"] == est.config.temperature
    assert kwargs["max_new_tokens"] == NEW_TOKENS
    assert calls[0]["rows"] == 6
    assert [len(e.raw_answers) for e in results] == [3, 3]
    assert [len(e.sample_values_m) for e in results] == [3, 3]

    est.estimate(items[:1], samples=1)
    assert calls[1]["kwargs"]["do_sample"] is False and calls[1]["kwargs"]["num_return_sequences"] == 1
    assert "temperature" not in calls[1]["kwargs"]


def test_decoded_text_is_parsed_and_combined_per_item_through_real_generate(qwen, monkeypatch):
    tok = qwen.processor.tokenizer
    real_decode = tok.batch_decode
    seen: list[tuple[int, int]] = []

    def batch_decode(sequences, **kwargs):
        texts = real_decode(sequences, **kwargs)  # the real generated tokens are decoded first
        seen.append(tuple(sequences.shape))
        return [f" {10 * (row + 1)} cm " for row in range(len(texts))]

    monkeypatch.setattr(tok, "batch_decode", batch_decode)
    items = [(f, _query("the bottle")) for f in _frames([(48, 64), (56, 56), (64, 48)])]
    results = qwen.estimate(items, samples=2)
    # Only the new tokens are decoded (the prompt is cut off): at most max_new_tokens columns.
    assert len(seen) == 1 and seen[0][0] == 6 and 1 <= seen[0][1] <= NEW_TOKENS
    # Rows 2i and 2i+1 belong to item i; the answers are stripped, parsed and their median taken.
    assert [e.raw_answers for e in results] == [["10 cm", "20 cm"], ["30 cm", "40 cm"], ["50 cm", "60 cm"]]
    assert [e.sample_values_m for e in results] == [
        pytest.approx([0.1, 0.2]), pytest.approx([0.3, 0.4]), pytest.approx([0.5, 0.6])]
    assert [e.value_m for e in results] == [pytest.approx(0.15), pytest.approx(0.35), pytest.approx(0.55)]
    assert all(e.reason is None for e in results)


def test_generate_answers_directly(llava):
    images = [Image.new("RGB", (64, 48), (255, 140, 0)), Image.new("RGB", (40, 40), (10, 20, 30))]
    answers = llava.generate_answers(images, ["How far is A from B?", "How wide is the gap?"], samples=2)
    assert len(answers) == 2 and [len(a) for a in answers] == [2, 2]
    for text in (t for group in answers for t in group):
        assert isinstance(text, str) and text == text.strip()


def test_max_image_pixels_bounds_the_images_the_processor_sees(tiny_qwen_dir, monkeypatch):
    est = build_estimator(_config(tiny_qwen_dir, max_image_pixels=4000))
    spy = _Spy(est.processor)
    monkeypatch.setattr(est, "processor", spy)
    big, small = _frames([(480, 640), (30, 100)])
    results = est.estimate([(big, _query("the bottle")), (small, _query("the bottle"))])
    assert len(results) == 2 and not any((e.reason or "").startswith("model failed") for e in results)
    assert len(spy.calls) == 1
    seen = spy.calls[0]["images"]
    assert all(isinstance(im, Image.Image) for im in seen)
    w, h = seen[0].size
    assert w * h <= 4000 and w * h > 3000  # shrunk to the budget, not far below it
    assert abs(w / h - 640 / 480) < 0.05  # aspect kept
    assert seen[1].size == (100, 30)  # an image within the budget is passed unchanged
    assert np.array_equal(np.asarray(seen[1]), small.rgb)


def test_non_contiguous_read_only_view_is_accepted(qwen, monkeypatch):
    base = np.random.default_rng(3).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    view = base[::-1, ::2, ::-1]  # flipped rows, every other column, BGR<->RGB: negative strides
    view.flags.writeable = False
    assert not view.flags.c_contiguous and not view.flags.writeable
    before = view.copy()
    spy = _Spy(qwen.processor)
    monkeypatch.setattr(qwen, "processor", spy)
    query = _query("the bottle")
    from_view = qwen.estimate([(Frame(view), query)])[0]
    from_copy = qwen.estimate([(Frame(np.ascontiguousarray(view)), query)])[0]
    assert not (from_view.reason or "").startswith("model failed")
    assert np.array_equal(np.asarray(spy.calls[0]["images"][0]), before)  # the pixels the view shows
    assert from_view.raw_answers == from_copy.raw_answers
    assert np.array_equal(view, before)  # the input is not written to


def test_generation_runs_under_inference_mode(est, monkeypatch):
    calls = _record_generate(monkeypatch, est)
    est.estimate([(_frames([(48, 64)])[0], _query("the bottle"))])
    assert calls[0]["inference_mode"] is True and calls[0]["grad"] is False
    assert not torch.is_inference_mode_enabled()  # not leaked to the caller


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory (simulated)"),
                                   ValueError("image features and image tokens do not match")])
def test_model_failure_gives_unknown_estimates_with_a_reason(qwen, monkeypatch, error):
    real = qwen.model.generate
    failures = []

    def generate(**kwargs):
        if not failures:
            failures.append(error)
            raise error
        return real(**kwargs)

    monkeypatch.setattr(qwen.model, "generate", generate)
    items = [(f, _query("the bottle")) for f in _frames([(48, 64), (64, 48)])]
    failed = qwen.estimate(items)  # must not raise
    assert [e.query for e in failed] == [q for _, q in items]
    assert all(e.value_m is None for e in failed)
    assert all(e.reason == f"model failed: {error}" for e in failed)
    recovered = qwen.estimate(items)  # the next batch works again
    assert all(len(e.raw_answers) == 1 and not (e.reason or "").startswith("model failed")
               for e in recovered)


# ------------------------------------------------------------------ combination (fixed text)


class FixedAnswers(VLMEstimator):
    """The real estimator with generate_answers replaced by fixed text per question."""

    def __init__(self, config: ModelConfig, answers: dict[str, list[str]], max_batch_size: int = 8):
        super().__init__(config, max_batch_size)
        self.answers = answers
        self.calls: list[tuple[list, list[str], int]] = []

    def generate_answers(self, images, questions, samples=1):
        self.calls.append((list(images), list(questions), samples))
        return [list(self.answers[q][:samples]) for q in questions]


@pytest.fixture(scope="module")
def fixed(tiny_qwen_dir) -> FixedAnswers:
    return FixedAnswers(_config(tiny_qwen_dir), {
        "mixed": ["0.4 m", "50 cm", "garbage"],
        "outlier": ["0.4 m", "0.5 m", "50 m"],
        "garbage": ["I cannot tell", "no idea", "?"],
        "one": ["about two metres"],
    })


def test_samples_are_combined_by_their_median(fixed):
    frame = _frames([(32, 32)])[0]
    mixed, outlier, garbage = (_query("x", t) for t in ("mixed", "outlier", "garbage"))
    got = fixed.estimate([(frame, mixed), (frame, outlier), (frame, garbage)], samples=3)
    assert got[0].value_m == pytest.approx(0.45)
    assert got[0].sample_values_m == [pytest.approx(0.4), pytest.approx(0.5), None]
    assert got[0].raw_answers == ["0.4 m", "50 cm", "garbage"] and got[0].reason is None
    assert got[1].value_m == pytest.approx(0.5)  # the median, not the mean (16.97 m)
    assert got[2].value_m is None and got[2].sample_values_m == [None, None, None]
    assert "no distance" in got[2].reason and "I cannot tell" in got[2].reason
    assert fixed.calls[-1][2] == 3


def test_estimate_chunks_by_max_batch_size_keeps_order_and_shares_frame_images(tiny_qwen_dir):
    est = FixedAnswers(_config(tiny_qwen_dir), {f"q{i}": [f"{i + 1} m"] for i in range(5)},
                       max_batch_size=2)
    f1, f2 = _frames([(40, 50), (50, 40)])
    frames = [f1, f1, f2, f1, f2]
    items = [(f, _query("x", f"q{i}")) for i, f in enumerate(frames)]
    results = est.estimate(items)
    assert [e.value_m for e in results] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [e.query for e in results] == [q for _, q in items]
    assert [len(qs) for _, qs, _ in est.calls] == [2, 2, 1]
    first_images = est.calls[0][0]
    assert first_images[0] is first_images[1]  # two questions on one frame share one image
    assert est.calls[1][0][0] is not est.calls[1][0][1]
    assert [[im.size for im in images] for images, _, _ in est.calls] == [
        [(50, 40), (50, 40)], [(40, 50), (50, 40)], [(40, 50)]]


def test_samples_below_one_are_refused(fixed):
    with pytest.raises(ValueError, match="at least 1"):
        fixed.estimate([(_frames([(32, 32)])[0], _query("x", "one"))], samples=0)


# ------------------------------------------------------------------ start-up errors


@pytest.mark.parametrize("name", ["/nonexistent/spatialvlm/checkpoint", "./no_such_checkpoint",
                                  "~/no_such_checkpoint_dir_xyz", "models/org/name"])
def test_path_that_does_not_exist(name):
    with pytest.raises(ModelLoadError) as info:
        build_estimator(ModelConfig(name_or_path=name))
    msg = str(info.value)
    assert name in msg and "not an existing directory" in msg and "hub id" in msg


def test_directory_without_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as info:
        build_estimator(ModelConfig(name_or_path=str(tmp_path)))
    msg = str(info.value)
    assert str(tmp_path) in msg and "config.json" in msg and "save_pretrained" in msg


def test_hub_id_not_cached_while_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelLoadError) as info:
        build_estimator(ModelConfig(name_or_path="nobody/not-a-model"))
    msg = str(info.value)
    assert "not in the local Hugging Face cache" in msg
    assert "hf download nobody/not-a-model" in msg and "HF_HUB_OFFLINE" in msg


def test_text_only_checkpoint_has_no_image_processor(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from spatialvlm_ros.tiny_models import _train_tokenizer

    tok = _train_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        build_estimator(ModelConfig(name_or_path=str(tmp_path)))
    msg = str(info.value)
    assert "no image processor" in msg and "image-text-to-text" in msg and str(tmp_path) in msg


def test_local_checkpoint_missing_its_processor_files(tmp_path, tiny_qwen_dir):
    ckpt = shutil.copytree(tiny_qwen_dir, tmp_path / "no_processor")
    (ckpt / "processor_config.json").unlink()
    with pytest.raises(ModelLoadError) as info:
        build_estimator(ModelConfig(name_or_path=str(ckpt)))
    msg = str(info.value)
    # A local directory is not a cache miss: say which files it lacks, do not send the user to the hub.
    assert str(ckpt) in msg and "processor_config.json" in msg and "save_pretrained" in msg
    assert "hf download" not in msg


def test_cuda_requested_without_cuda(tiny_qwen_dir, monkeypatch):
    from spatialvlm_ros.spatial import vlm

    monkeypatch.setattr(vlm.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError) as info:
        build_estimator(_config(tiny_qwen_dir, device="cuda"))
    msg = str(info.value)
    assert "no CUDA" in msg and "'auto' or 'cpu'" in msg


@pytest.mark.parametrize("field, value, expected", [
    ("backend", "onnx", "model.backend='onnx' is not accepted; accepted: vlm"),
    ("device", "gpu", "accepted: auto, cpu, cuda"),
    ("dtype", "fp32", "accepted: auto, float32, bfloat16, float16"),
    ("name_or_path", "", "hub id or a local checkpoint directory"),
    ("name_or_path", "   ", "model.name_or_path is empty"),
    ("max_new_tokens", 0, "at least 1"),
])
def test_invalid_model_config_is_refused(field, value, expected):
    with pytest.raises(ValueError) as info:
        ModelConfig(**{field: value})
    assert expected in str(info.value)


def test_core_modules_do_not_import_torch_or_transformers():
    code = ("import sys; import spatialvlm_ros.spatial.estimator, spatialvlm_ros.spatial.reward, "
            "spatialvlm_ros.spatial.questions, spatialvlm_ros.spatial.latest; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ one model per process


class _FakeInner:
    backend = "vlm"

    def __init__(self, config: ModelConfig) -> None:
        self.model_name = config.name_or_path
        self.closed = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def estimate(self, items, samples=1):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.05)
        with self._lock:
            self.active -= 1
        return [Estimate(q, 1.0) for _, q in items]

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def counted_loads(monkeypatch) -> list[ModelConfig]:
    loads: list[ModelConfig] = []

    def fake_build(config):
        loads.append(config)
        return _FakeInner(config)

    monkeypatch.setattr(estimator_mod, "build_estimator", fake_build)
    monkeypatch.setattr(estimator_mod, "_SHARED", {})
    return loads


def test_shared_estimator_loads_once_per_config_and_last_close_frees(counted_loads):
    a = shared_estimator(ModelConfig(name_or_path="org/model"))
    b = shared_estimator(ModelConfig(name_or_path="org/model"))  # equal config, another instance
    assert a is b and len(counted_loads) == 1
    other = shared_estimator(ModelConfig(name_or_path="org/model", dtype="float32"))
    assert other is not a and len(counted_loads) == 2
    assert a.backend == "vlm" and a.model_name == "org/model"

    a.close()  # one of two users leaves: the model stays
    assert a.inner.closed == 0
    assert shared_estimator(ModelConfig(name_or_path="org/model")) is a and len(counted_loads) == 2
    a.close()
    a.close()  # the last user leaves: freed and forgotten
    assert a.inner.closed == 1
    assert ModelConfig(name_or_path="org/model") not in estimator_mod._SHARED
    again = shared_estimator(ModelConfig(name_or_path="org/model"))
    assert again is not a and len(counted_loads) == 3
    assert other.inner.closed == 0


def test_shared_estimator_serializes_estimate_calls(counted_loads):
    shared = shared_estimator(ModelConfig(name_or_path="org/model"))
    query = _query("x")
    results: list[list[Estimate]] = []
    threads = [threading.Thread(target=lambda: results.append(shared.estimate([(None, query)])))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(results) == 3 and all(r[0].value_m == 1.0 for r in results)
    assert shared.inner.max_active == 1


def test_shared_real_estimator_is_freed_by_the_last_close(tiny_qwen_dir, monkeypatch):
    monkeypatch.setattr(estimator_mod, "_SHARED", {})
    config = _config(tiny_qwen_dir)
    first, second = shared_estimator(config), shared_estimator(replace(config))
    assert first is second and isinstance(first.inner, VLMEstimator)
    result = first.estimate([(_frames([(48, 64)])[0], _query("the bottle"))])
    assert len(result) == 1 and len(result[0].raw_answers) == 1
    first.close()
    assert first.inner.model is not None
    second.close()
    assert first.inner.model is None and estimator_mod._SHARED == {}
