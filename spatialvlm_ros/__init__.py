"""spatialvlm_ros: metric spatial reasoning from a camera for ROS 2 (SpatialVLM-style)."""

__version__ = "0.1.0"
