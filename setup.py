"""ament_python build for spatialvlm_ros (colcon on a robot, pip in the venv here)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spatialvlm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    # The shipped tiny spatial model travels inside the package (pip and colcon installs alike).
    package_data={PACKAGE: ["py.typed", "models/tiny_spatial_qwen/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="spatialvlm_ros maintainers",
    maintainer_email="maintainers@spatialvlm-ros.dev",
    description="Metric spatial reasoning from a camera for ROS 2 (SpatialVLM-style).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "reward_node = spatialvlm_ros.reward_node:main",
            "affordance_node = spatialvlm_ros.affordance_node:main",
            "reward_node_managed = spatialvlm_ros.managed:reward_main",
            "affordance_node_managed = spatialvlm_ros.managed:affordance_main",
            "spatialvlm_node = spatialvlm_ros.combined_node:main",
            "spatialvlm_node_managed = spatialvlm_ros.combined_node:managed_main",
            "recorder_node = spatialvlm_ros.recorder_node:main",
            "spatialvlm_demo_camera = spatialvlm_ros.demo_camera:main",
            "spatialvlm_make_tiny_model = spatialvlm_ros.tiny_models:main",
            "spatialvlm_train = spatialvlm_ros.train:main",
            "spatialvlm_annotate = spatialvlm_ros.annotate:main",
            "spatialvlm_synthesize = spatialvlm_ros.synthesize:main",
            "spatialvlm_recover = spatialvlm_ros.recover:main",
        ],
    },
)
