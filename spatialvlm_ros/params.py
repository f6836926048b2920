"""Every node parameter, declared once: name, default, unit, description and what values are valid.

ROS-free on purpose: the nodes declare from these specs (``node_support.declare_parameters``), the
README table and config/*.yaml are checked against them by the tests, so the three cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ParamValue = bool | int | float | str | list


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: the single source of truth for its default, type, range and meaning."""

    name: str
    default: ParamValue
    description: str
    unit: str = ""
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    read_only: bool = False
    allow_empty: bool = True

    @property
    def type_name(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "double"
        if isinstance(self.default, list):
            return "string[]"
        return "string"

    def validate(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable, or None when it is."""
        kind = self.type_name
        if kind == "bool" and not isinstance(value, bool):
            return f"{self.name} must be true or false, got {value!r}"
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{self.name} must be an integer, got {value!r}"
        if kind == "double":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{self.name} must be a number, got {value!r}"
            if not math.isfinite(float(value)):
                return f"{self.name} must be finite, got {value!r}"
        if kind == "string":
            if not isinstance(value, str):
                return f"{self.name} must be a string, got {value!r}"
            if not self.allow_empty and not value.strip():
                return f"{self.name} must not be empty"
        if kind == "string[]" and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        ):
            return f"{self.name} must be a list of strings, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name}={value!r} is not accepted; accepted: {', '.join(self.choices)}"
        if kind in ("int", "double"):
            if self.min_value is not None and value < self.min_value:
                return f"{self.name}={value} is below the minimum {self.min_value}"
            if self.max_value is not None and value > self.max_value:
                return f"{self.name}={value} is above the maximum {self.max_value}"
        return None

    def range_text(self) -> str:
        if self.choices:
            return " \\| ".join(self.choices)
        if self.min_value is not None or self.max_value is not None:
            lo = "" if self.min_value is None else _number(self.min_value)
            hi = "" if self.max_value is None else _number(self.max_value)
            return f"[{lo}, {hi}]"
        return ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class ParamSet:
    """The parameters of one node, in declaration order."""

    node_name: str
    specs: tuple[ParamSpec, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> ParamSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def defaults(self) -> dict[str, ParamValue]:
        return {s.name: s.default for s in self.specs}

    def validate(self, values: dict[str, Any]) -> list[str]:
        """Reasons why ``values`` (name -> value) are not acceptable; empty when all are."""
        errors = []
        for name, value in values.items():
            try:
                spec = self[name]
            except KeyError:
                errors.append(f"unknown parameter {name!r} for {self.node_name}")
                continue
            reason = spec.validate(value)
            if reason:
                errors.append(reason)
        return errors

    def markdown_table(self) -> str:
        """The README table of these parameters (the README embeds exactly this text)."""
        rows = [
            "| parameter | type | default | unit | valid | description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in self.specs:
            default = s.default if not isinstance(s.default, str) else f'"{s.default}"'
            if isinstance(s.default, bool):
                default = str(s.default).lower()
            flags = " (read-only: set at start)" if s.read_only else ""
            rows.append(
                f"| `{s.name}` | {s.type_name} | `{default}` | {s.unit} | {s.range_text()} "
                f"| {s.description}{flags} |"
            )
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Shared groups. The model group is the same in every node that runs an estimator, and in the
# annotator's command line, so it is defined once here.

BACKENDS = ("vlm", "geometric", "remote")
IMAGE_FORMATS = ("png", "jpeg")
DEPTH_SOURCES = ("auto", "topic", "model")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")

MODEL_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model.backend", "vlm",
        "Which estimator answers spatial questions: vlm (a vision-language model in this process, "
        "model.name_or_path), geometric (open-vocabulary detection plus metric depth lifted to 3D: "
        "model.detector, model.depth_source, model.depth_model) or remote (a vision-language model "
        "behind an OpenAI-compatible server such as vLLM: model.base_url, model.name_or_path).",
        choices=BACKENDS, read_only=True,
    ),
    ParamSpec(
        "model.name_or_path", "Qwen/Qwen2.5-VL-7B-Instruct",
        "vlm backend: hub id or local directory of an image-text-to-text checkpoint (transformers). "
        "Offline (HF_HUB_OFFLINE=1) a hub id must already be in the cache. remote backend: the model "
        "id the server serves (as GET /v1/models lists it).",
        read_only=True, allow_empty=False,
    ),
    ParamSpec(
        "model.device", "auto", "Where the model runs; auto picks cuda when available.",
        choices=DEVICES, read_only=True,
    ),
    ParamSpec(
        "model.dtype", "auto", "Weights dtype; auto is bfloat16 on CUDA and float32 on CPU.",
        choices=DTYPES, read_only=True,
    ),
    ParamSpec(
        "model.max_image_pixels", 401408,
        "Frames are downscaled to at most this many pixels before the model sees them "
        "(0: no limit). Bounds GPU memory and latency.",
        unit="px", min_value=0, max_value=16_777_216, read_only=True,
    ),
    ParamSpec(
        "model.cpu_threads", 0,
        "torch threads for a model on the CPU, e.g. to leave cores to other processes (0: "
        "OMP_NUM_THREADS if set, else torch's default, one per core). Idle OpenMP threads sleep "
        "(OMP_WAIT_POLICY=PASSIVE is set before torch loads) unless OMP_WAIT_POLICY is set.",
        unit="threads", min_value=0, max_value=1024, read_only=True,
    ),
    ParamSpec(
        "model.max_new_tokens", 32, "Longest answer the model may generate.",
        unit="tokens", min_value=1, max_value=1024, read_only=True,
    ),
    ParamSpec(
        "model.temperature", 0.7,
        "Sampling temperature when samples_per_frame > 1 (one sample is decoded greedily).",
        min_value=0.01, max_value=5.0, read_only=True,
    ),
    ParamSpec(
        "model.seed", 0, "Seed for sampled answers; makes repeated runs comparable.",
        min_value=0, max_value=2**31 - 1, read_only=True,
    ),
    ParamSpec(
        "model.trust_remote_code", False,
        "Allow checkpoints that ship their own Python code (only for models you trust).",
        read_only=True,
    ),
    ParamSpec(
        "model.detector", "google/owlv2-base-patch16-ensemble",
        "geometric backend: hub id or local directory of a zero-shot object detection checkpoint "
        "(transformers; OWLv2, OWL-ViT or Grounding DINO). The best box per object description is used.",
        read_only=True, allow_empty=False,
    ),
    ParamSpec(
        "model.detector_threshold", 0.1,
        "geometric backend: detections scoring below this are ignored; an object with none above it "
        "is answered as not found.",
        min_value=0.0, max_value=1.0, read_only=True,
    ),
    ParamSpec(
        "model.depth_source", "auto",
        "geometric backend: topic uses the `depth` topic only (no depth model is loaded; frames "
        "without depth are not measured); model always estimates depth from the colour image; auto "
        "uses the depth topic when a frame has usable depth and the model otherwise (with auto and "
        "model the depth model is loaded at start-up).",
        choices=DEPTH_SOURCES, read_only=True,
    ),
    ParamSpec(
        "model.depth_model", "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf",
        "geometric backend: hub id or local directory of a metric monocular depth estimation "
        "checkpoint (transformers; Depth Anything V2 metric by default). Not loaded when "
        "model.depth_source is topic.",
        read_only=True,
    ),
    ParamSpec(
        "model.segmenter", "none",
        "geometric backend: none separates each detected object from the floor, the background and its "
        "neighbours by depth alone; otherwise a hub id or local directory of a promptable segmenter "
        "(transformers; SAM, SAM-HQ or SAM 2, e.g. facebook/sam-vit-base) that turns each detection box "
        "into a mask, which the same depth checks then clean.",
        read_only=True, allow_empty=False,
    ),
    ParamSpec(
        "model.fallback_hfov_deg", 60.0,
        "geometric backend: horizontal field of view assumed while no usable camera_info has "
        "arrived (square pixels, centred principal point); answers say when it was used.",
        unit="deg", min_value=1.0, max_value=179.0, read_only=True,
    ),
    # The remote backend (spatial/remote.py): the same question and image to an OpenAI-compatible server.
    ParamSpec(
        "model.base_url", "http://127.0.0.1:8000/v1",
        "remote backend: the server's OpenAI-compatible API root, usually ending in /v1 (vLLM, "
        "SGLang, TGI, llama.cpp, Ollama, transformers serve).",
        read_only=True, allow_empty=False,
    ),
    ParamSpec(
        "model.api_key_env", "",
        "remote backend: the NAME of the environment variable that holds the API key (the key "
        "itself is never a parameter, so `ros2 param get` cannot print it); empty: no key.",
        read_only=True,
    ),
    ParamSpec(
        "model.timeout_s", 10.0,
        "remote backend: one request's time limit; a frame whose answer takes longer gets no number.",
        unit="s", min_value=0.1, max_value=3600.0, read_only=True,
    ),
    ParamSpec(
        "model.retries", 0,
        "remote backend: retries of a request that failed on the connection, a timeout, 408/409/429 "
        "or 5xx (the openai client's backoff). 0: a reward must not wait out retries on a stale frame.",
        min_value=0, max_value=10, read_only=True,
    ),
    ParamSpec(
        "model.max_in_flight", 1,
        "remote backend: requests in flight at once (frames, samples, both gap orders); more lets a "
        "batching server (vLLM) keep up with a faster camera. reward_node with frame_policy newest "
        "then measures this many frames at a time (frame_policy every keeps one, in order).",
        unit="requests", min_value=1, max_value=64, read_only=True,
    ),
    ParamSpec(
        "model.image_format", "png",
        "remote backend: how the (resized) frame travels in the request, as a data URL. png is "
        "lossless (the server sees the pixels the in-process model would); jpeg (quality 90) changes "
        "pixels and is smaller for camera images.",
        choices=IMAGE_FORMATS, read_only=True,
    ),
    ParamSpec(
        "model.extra_body", "",
        "remote backend: a JSON object merged into every request body, for server-specific options "
        "(transformers serve samples only when its generation_config field sets do_sample, see the "
        "README; vLLM takes top_k, mm_processor_kwargs, ...). Empty: none.",
        read_only=True,
    ),
)

# The other backend on the same frame, for checking one against the other (see the README).
def cross_check_param(what: str) -> ParamSpec:
    return ParamSpec(
        "cross_check", False,
        "Also run the other backend (vlm or remote -> geometric, geometric -> vlm, with the same "
        "model.* options) on every "
        f"frame and report its number and the ratio to this one's in {what}; the configured "
        "backend still decides. Loads a second model.",
        read_only=True,
    )


IMAGE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "image_transport", "raw",
        "raw subscribes `image` (sensor_msgs/Image); compressed subscribes `image/compressed` "
        "(sensor_msgs/CompressedImage).",
        choices=("raw", "compressed"), read_only=True,
    ),
)

# How depth and camera_info are joined to a colour frame (spatial/stamp_sync.py); the annotator's
# command line takes the same options, so live and offline join the same depth to a frame.
SYNC_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "sync.slop_s", 0.02,
        "A depth image or camera_info belongs to a colour frame when its header stamp is within "
        "this of the frame's (nearest wins); otherwise it is not used and the answer's warning says "
        "so. Keep it below half the camera period so a neighbouring frame's depth never matches.",
        unit="s", min_value=0.0, max_value=10.0, read_only=True,
    ),
    ParamSpec(
        "sync.max_age_s", 0.5,
        "A matching depth or camera_info must also arrive within this of the colour frame (either "
        "way): a stalled or backed-up stream is not used. Live, a frame waits at most this long for "
        "its depth, and only while the depth stream is publishing.",
        unit="s", min_value=0.001, max_value=60.0, read_only=True,
    ),
    ParamSpec(
        "sync.camera_info_static", False,
        "The calibration never changes (camera_info published once, latched, or not restamped): use "
        "the newest camera_info whatever its stamp.",
        read_only=True,
    ),
)

WORKER_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "worker_nice", 0,
        "Raise the model worker thread's nice value by this much (Linux; its torch threads inherit "
        "it), so that under CPU contention services, parameter changes and shutdown get a core before "
        "the model does. 0 leaves it alone.",
        min_value=0, max_value=19, read_only=True,
    ),
)

DIAGNOSTICS_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "diagnostics_period_s", 1.0, "How often rate, latency and drops go to /diagnostics.",
        unit="s", min_value=0.1, max_value=60.0, read_only=True,
    ),
)

REWARD_PARAMS = ParamSet(
    "spatialvlm_reward",
    (
        ParamSpec(
            "target_object", "the orange tea bottle",
            "The object whose distance from the gripper is the reward, in plain words.",
            allow_empty=False,
        ),
        ParamSpec(
            "gripper_description", "the robot gripper",
            "How the gripper is named in the question.", allow_empty=False,
        ),
        ParamSpec(
            "question_template",
            "How far is {gripper} from {target}? Answer with a distance in metres.",
            "The question put to the model on every frame; {gripper} and {target} are filled in.",
            allow_empty=False,
        ),
        ParamSpec(
            "samples_per_frame", 1,
            "Answers sampled per frame and combined by their median (the paper averaged several).",
            min_value=1, max_value=16,
        ),
        ParamSpec(
            "reward.mode", "negative_distance",
            "negative_distance: reward = -scale * d. progress: reward = scale * (d_prev - d), 0 on "
            "the first frame of an episode.",
            choices=("negative_distance", "progress"),
        ),
        ParamSpec("reward.scale", 1.0, "Multiplies the shaped reward.", unit="1/m",
                  min_value=0.0, max_value=1e6),
        ParamSpec(
            "reward.success_distance_m", 0.0,
            "Within this distance the success bonus is added (0 disables it).", unit="m",
            min_value=0.0, max_value=100.0,
        ),
        ParamSpec("reward.success_bonus", 0.0, "Added to the reward within the success distance.",
                  min_value=-1e6, max_value=1e6),
        ParamSpec(
            "reward.smoothing_window", 1,
            "Median of the last N distances drives the reward (1: no smoothing). Cleared by reset.",
            min_value=1, max_value=100,
        ),
        ParamSpec(
            "frame_policy", "newest",
            "newest: a frame that arrives while the model is busy replaces the waiting one (a real "
            "camera: the reward stays recent). every: frames wait in a FIFO of frame_queue_size and "
            "each is answered in order (a simulator that waits for its reward). Either way every "
            "frame gets one reward_info; a replaced or refused one says so.",
            choices=("newest", "every"), read_only=True,
        ),
        ParamSpec(
            "frame_queue_size", 32,
            "frame_policy every: frames that may wait for the model; one more is refused (its "
            "reward_info says so) and counted in frames_dropped.",
            unit="frames", min_value=1, max_value=1000, read_only=True,
        ),
        cross_check_param("reward_info (cross_check)"),
        *IMAGE_PARAMS,
        *SYNC_PARAMS,
        *WORKER_PARAMS,
        *DIAGNOSTICS_PARAMS,
        *MODEL_PARAMS,
    ),
)

AFFORDANCE_PARAMS = ParamSet(
    "spatialvlm_affordance",
    (
        ParamSpec(
            "robot_width_m", 0.6,
            "The robot's width: check_gap uses it, and so does a query that states no width.",
            unit="m", min_value=0.01, max_value=100.0,
        ),
        ParamSpec(
            "safety_margin_m", 0.1,
            "fits is true when the gap exceeds the robot width by at least this (total, not per "
            "side); used when a query states no margin.",
            unit="m", min_value=0.0, max_value=10.0,
        ),
        # The gap.* parameters stay together: config/*.yaml nests them under one gap: key.
        ParamSpec(
            "gap.object_a", "the sofa",
            "One side of the gap that check_gap and the periodic answers measure, in plain words.",
            allow_empty=False,
        ),
        ParamSpec("gap.object_b", "the table", "The other side of that gap.", allow_empty=False),
        ParamSpec(
            # The same text as affordance.DEFAULT_GAP_TEMPLATE (a test keeps them equal); written out
            # because the core imports this module, so it cannot import the core.
            "gap.question_template",
            "How wide is the gap between {a} and {b}? Answer with a distance in metres.",
            "The gap-width question put to the model, asked in both object orders; {a} and {b} are "
            "filled in.",
            allow_empty=False,
        ),
        ParamSpec(
            "gap.max_disagreement_ratio", 1.5,
            "When the larger of the two object orders' gap estimates exceeds the smaller by more "
            "than this ratio, the answer says consistent: false.",
            min_value=1.0, max_value=100.0,
        ),
        ParamSpec(
            "samples_per_frame", 1,
            "Answers sampled per question (each object order) and combined by their median.",
            min_value=1, max_value=16,
        ),
        ParamSpec(
            "max_frame_age_s", 2.0,
            "A query is answered with fits null when the newest frame arrived longer ago than this, "
            "by this node's steady clock (0: any age).",
            unit="s", min_value=0.0, max_value=3600.0,
        ),
        ParamSpec(
            "publish_rate_hz", 0.0,
            "Answer the configured gap on the newest frame this often on affordance/answer (0: off).",
            unit="Hz", min_value=0.0, max_value=30.0,
        ),
        ParamSpec(
            "check_gap_timeout_s", 30.0,
            "check_gap gives up (success false) when its answer takes longer than this, queueing "
            "included. Raise it for a slow model (a 7B model on CPU).",
            unit="s", min_value=0.1, max_value=3600.0,
        ),
        ParamSpec(
            "query_queue_size", 8,
            "Queries waiting for the model, at most (answered in order); one more gets an immediate "
            "answer with fits null and reason busy.",
            unit="queries", min_value=1, max_value=1000, read_only=True,
        ),
        cross_check_param("the answer (cross_check)"),
        *IMAGE_PARAMS,
        *SYNC_PARAMS,
        *WORKER_PARAMS,
        *DIAGNOSTICS_PARAMS,
        *MODEL_PARAMS,
    ),
)

RECORDER_TOPICS = ["image", "camera_info", "depth", "joint_states", "reward", "reward_stamped", "reward_info"]

RECORDER_PARAMS = ParamSet(
    "spatialvlm_recorder",
    (
        ParamSpec(
            "output_dir", "~/spatialvlm_episodes",
            "Each episode is a new directory under this one (created if missing; ~ is expanded). "
            "A change applies to the next episode.",
            allow_empty=False,
        ),
        ParamSpec(
            "topics", list(RECORDER_TOPICS),
            "Topics to record. Relative names resolve in the node's namespace and follow "
            "remapping; types are taken from the graph as publishers appear.",
            read_only=True,
        ),
        ParamSpec(
            "task", "",
            "What the robot is doing, saved in episode.yaml (the value when the episode stops).",
        ),
        ParamSpec(
            "target_object", "",
            "The object the episode is about, saved in episode.yaml; the annotator's default "
            "target (the value when the episode stops).",
        ),
        ParamSpec(
            "max_episode_duration_s", 0.0,
            "An episode stops and is finalized on its own after this long (0: no limit).",
            unit="s", min_value=0.0, max_value=86400.0,
        ),
        ParamSpec(
            "topic_discovery_period_s", 1.0,
            "How often topics whose publishers have not appeared yet are looked up in the graph.",
            unit="s", min_value=0.05, max_value=60.0, read_only=True,
        ),
        ParamSpec(
            "subscription_depth", 100,
            "History depth of each recording subscription (messages DDS may hold while the "
            "executor catches up). Reliability follows the publishers: reliable when all are.",
            unit="messages", min_value=1, max_value=10000, read_only=True,
        ),
        ParamSpec(
            "max_queue_mb", 1024,
            "Bytes waiting for the disk, at most. Accepted messages are never dropped; a message "
            "that would exceed this is refused and counted in frames_dropped.",
            unit="MiB", min_value=16, max_value=65536, read_only=True,
        ),
        ParamSpec(
            "flush_period_s", 1.0,
            "At least this often the messages written so far are closed into an MCAP chunk and "
            "fsync'ed: a recorder killed or a power cut loses at most about this much of the episode "
            "(plus the chunk being written, up to 1 MiB), and spatialvlm_recover rebuilds the rest.",
            unit="s", min_value=0.05, max_value=60.0, read_only=True,
        ),
        ParamSpec(
            "compression", "none",
            "MCAP chunk compression: none, lz4 (fast, like rosbag2's presets) or zstd (level 1, "
            "smaller). Costs CPU on the writer thread; bench/recorder.py prints MB/s and ratio.",
            choices=("none", "lz4", "zstd"), read_only=True,
        ),
        ParamSpec(
            "recover_on_start", True,
            "At start-up, rebuild episodes under output_dir left unfinalized by a recorder that was "
            "killed or lost power (episode.yaml then says finalized: false, recovered: true).",
            read_only=True,
        ),
    ),
)

ALL_PARAM_SETS: tuple[ParamSet, ...] = (REWARD_PARAMS, AFFORDANCE_PARAMS, RECORDER_PARAMS)
