"""ROS-free core of spatialvlm_ros: questions, answer parsing, geometry, reward shaping, episodes.

Nothing here imports rclpy; torch and transformers are imported only when a model is built.
"""

from spatialvlm_ros.spatial.distance_text import format_distance, parse_distance

__all__ = ["format_distance", "parse_distance"]
