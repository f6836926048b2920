"""Synthetic tabletop scenes with known 3D geometry, their rendering, and spatial QA over them.

ROS-free (numpy and OpenCV). Used to train and test the shipped tiny spatial model, by the demo camera,
and to check any estimator against ground truth::

    rng = np.random.default_rng(0)
    scene = random_scene(rng).at_resolution(640, 480)
    frame = render(scene, depth_noise_std_m=0.002, rng=rng)   # rgb, depth_m, instance
    truth = scene.gripper_distance("the red cube")           # from the scene definition
    gap = scene.gap("the red cube", "the blue cylinder").width_m
"""

from spatialvlm_ros.spatial.synth.camera import PinholeCamera, default_camera
from spatialvlm_ros.spatial.synth.qa import (
    DEFAULT_MIX,
    METRIC_KINDS,
    QA,
    QA_KINDS,
    REWARD_TEMPLATE,
    closer_qa,
    gap_qa,
    gripper_distance_qa,
    left_right_qa,
    object_distance_qa,
    sample_qa,
    width_qa,
)
from spatialvlm_ros.spatial.synth.render import RenderResult, render
from spatialvlm_ros.spatial.synth.scene import (
    BACKGROUND_ID,
    COLOURS,
    DEMO_TARGET,
    GRIPPER,
    GRIPPER_ID,
    OBJECT_ID0,
    SHAPES,
    TABLE_ID,
    Gap,
    Gripper,
    Scene,
    SceneObject,
    Table,
    Trajectory,
    approach_trajectory,
    demo_scene,
    make_box,
    make_cube,
    make_cylinder,
    random_approach,
    random_scene,
)
from spatialvlm_ros.spatial.synth.shapes import Box, Cylinder, footprint_gap

__all__ = [
    "BACKGROUND_ID", "COLOURS", "DEFAULT_MIX", "DEMO_TARGET", "GRIPPER", "GRIPPER_ID", "METRIC_KINDS",
    "OBJECT_ID0", "QA", "QA_KINDS", "REWARD_TEMPLATE", "SHAPES", "TABLE_ID", "Box", "Cylinder", "Gap", "Gripper",
    "PinholeCamera", "RenderResult", "Scene", "SceneObject", "Table", "Trajectory", "approach_trajectory",
    "closer_qa", "default_camera", "demo_scene", "footprint_gap", "gap_qa", "gripper_distance_qa",
    "left_right_qa", "make_box", "make_cube", "make_cylinder", "object_distance_qa", "random_approach",
    "random_scene", "render", "sample_qa", "width_qa",
]
