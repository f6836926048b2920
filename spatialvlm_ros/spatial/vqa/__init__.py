"""SpatialVLM's data engine on a robot's own frames: select frames, find and measure objects with the
geometric backend, name them unambiguously, and write spatial question-answer pairs from templates.

ROS-free. ``spatialvlm_synthesize`` (spatialvlm_ros/synthesize.py) is the command line; ``spatialvlm_train
--data`` trains on what it writes.
"""
