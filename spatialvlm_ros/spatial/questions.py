"""Question templates: the words put to the model for each kind of spatial query.

Templates are plain ``str.format`` strings with named fields, overridable in config; they are checked
when set so a typo fails at the parameter call, not on the next frame.
"""

from __future__ import annotations

import string

from spatialvlm_ros.spatial.estimator import SpatialQuery

DEFAULT_DISTANCE_TEMPLATE = "How far is {gripper} from {target}? Answer with a distance in metres."
DISTANCE_FIELDS = ("gripper", "target")


def check_template(template: str, fields: tuple[str, ...], required: tuple[str, ...]) -> str | None:
    """Why ``template`` is unusable with ``fields`` (None when it is fine)."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"question template {template!r} is not a valid format string: {exc}"
    unknown = used - set(fields)
    if unknown:
        shown = ", ".join("{" + name + "}" for name in sorted(unknown))
        return (f"question template uses unknown field(s) {shown}; "
                f"accepted: {', '.join('{' + f + '}' for f in fields)}")
    missing = [f for f in required if f not in used]
    if missing:
        return f"question template must contain {', '.join('{' + f + '}' for f in missing)}"
    return None


def distance_query(template: str, gripper: str, target: str) -> SpatialQuery:
    """The per-frame reward question: distance from the gripper to the target object."""
    reason = check_template(template, DISTANCE_FIELDS, required=("target",))
    if reason:
        raise ValueError(reason)
    if not target.strip():
        raise ValueError("target_object must not be empty")
    text = template.format(gripper=gripper.strip(), target=target.strip())
    return SpatialQuery("distance", gripper.strip(), target.strip(), text)
