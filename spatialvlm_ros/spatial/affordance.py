"""Navigation-gap affordance: "can a 60 cm wide robot pass between the sofa and the table?".

Reads the question (plain words or JSON), measures the gap SpatialVLM-style by asking the estimator in
both object orders, and decides whether the robot fits with a safety margin. ROS-free: the affordance
node converts messages and calls these functions.
"""

# Decisions worth knowing before changing this module:
# * The width and margin are read with ``parse_distance`` on the clause that states them; this module
#   finds clauses, it never reads units itself, so every unit the answer parser knows works here too.
# * A description that names one group ("between the bins") is refused: the model needs two things to
#   measure between, and guessing "the left bin" / "the right bin" would measure a gap nobody asked
#   about.
# * Request ids travel in JSON only ({"id": ..., "question": "..."} carries an id for plain words);
#   words that look like an id inside a sentence would be guessed, not read.
# * ``fits`` uses the mean of the two object orders even when they disagree; the disagreement is
#   reported (``consistent: false`` and in the sentence) so a cautious planner can treat it as unknown.

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spatialvlm_ros.spatial.distance_text import format_distance, parse_distance
from spatialvlm_ros.spatial.estimator import Estimate, Estimator, Frame, SpatialQuery

__all__ = [
    "DEFAULT_GAP_TEMPLATE",
    "FIT_EPSILON_M",
    "GapAnswer",
    "GapQuery",
    "GapQuestionError",
    "answer_gap",
    "decide",
    "gap_answer_from_estimates",
    "gap_queries",
    "parse_gap_question",
    "parse_gap_request",
    "validate_gap_template",
]

DEFAULT_GAP_TEMPLATE = "How wide is the gap between {a} and {b}? Answer with a distance in metres."

# Float subtraction leaves noise far below any measurement: 0.7 - 0.6 is 0.09999999999999998, which
# must still pass a 0.1 m margin. A nanometre is ~1e7 times that noise at metre scale and ~1e6 times
# below anything a camera can resolve, so it changes no real decision.
FIT_EPSILON_M = 1e-9
# Published lengths are rounded to the nanometre for the same reason: "70 cm" should be 0.7, not
# 0.7000000000000001, in the JSON a planner reads.
_NDIGITS = 9

# A planner can send anything on a topic; bounding the text keeps one message from stalling the
# parser or filling a prompt.
MAX_QUESTION_CHARS = 1000
MAX_REQUEST_CHARS = 4000
MAX_OBJECT_CHARS = 200

_JSON_FIELDS = ("id", "object_a", "object_b", "robot_width_m", "safety_margin_m", "question")
_DETERMINERS = frozenset(
    {"the", "an", "this", "that", "these", "those", "my", "our", "your", "its", "their", "his",
     "her", "some"}
)  # fmt: skip
# ("a" is left out: "A" and "B" are fine names for objects in a scene.)


class GapQuestionError(ValueError):
    """A gap question or request that cannot be answered as asked; ``reason`` says why.

    ``request_id`` is the request's id when it could be read (JSON requests), so that even a refusal
    can be matched to its query by the planner.
    """

    def __init__(self, reason: str, request_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


def _real(value: Any) -> bool:
    # bool is an int in Python, but ``true`` is not a width.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    """A real, finite number; a 400-digit integer (valid JSON) overflows float and is not."""
    if not _real(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _object_key(description: str) -> str:
    """What makes two descriptions the same object: case, spacing and a leading article do not."""
    words = description.casefold().split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def _object_problem(role: str, description: Any) -> str | None:
    if not isinstance(description, str):
        return f"{role} must be text, got {type(description).__name__}"
    text = description.strip()
    if not text:
        return f"{role} is missing (empty description)"
    if len(text) > MAX_OBJECT_CHARS:
        return f"{role} is too long ({len(text)} characters; at most {MAX_OBJECT_CHARS})"
    if all(word in _DETERMINERS for word in text.casefold().split()):
        return f"{role} {text!r} names no object"
    return None


@dataclass(frozen=True)
class GapQuery:
    """One affordance question: does a robot this wide fit between these two objects?

    ``question`` is the text the user asked (or one written from the JSON fields); ``id`` is the
    request's id, "" when it had none.
    """

    id: str
    object_a: str
    object_b: str
    robot_width_m: float
    safety_margin_m: float
    question: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise GapQuestionError(f"id must be a string, got {type(self.id).__name__}")
        for role, value in (("object_a", self.object_a), ("object_b", self.object_b)):
            problem = _object_problem(role, value)
            if problem:
                raise GapQuestionError(problem, self.id)
        if _object_key(self.object_a) == _object_key(self.object_b):
            raise GapQuestionError(
                f"object_a and object_b are the same object ({self.object_a.strip()!r}); a gap "
                "needs two different objects",
                self.id,
            )
        if not _finite(self.robot_width_m):
            raise GapQuestionError(
                f"robot_width_m must be a finite number of metres, got {self.robot_width_m!r}",
                self.id,
            )
        if self.robot_width_m <= 0:
            raise GapQuestionError(
                f"robot_width_m must be greater than 0 m, got {self.robot_width_m!r}", self.id
            )
        if not _finite(self.safety_margin_m):
            raise GapQuestionError(
                f"safety_margin_m must be a finite number of metres, got {self.safety_margin_m!r}",
                self.id,
            )
        if self.safety_margin_m < 0:
            raise GapQuestionError(
                f"safety_margin_m must not be negative, got {self.safety_margin_m!r}", self.id
            )
        if not isinstance(self.question, str):
            raise GapQuestionError(
                f"question must be text, got {type(self.question).__name__}", self.id
            )
        # Normalised copies: the names go into the prompt and the answer as the user wrote them,
        # minus stray spaces; the lengths as floats so an int from JSON serialises like the rest.
        object.__setattr__(self, "object_a", self.object_a.strip())
        object.__setattr__(self, "object_b", self.object_b.strip())
        object.__setattr__(self, "robot_width_m", float(self.robot_width_m))
        object.__setattr__(self, "safety_margin_m", float(self.safety_margin_m))
        if not self.question.strip():
            object.__setattr__(self, "question", self._written_question())

    def _written_question(self) -> str:
        return (
            f"Can a {self.robot_width_m:g} m wide robot pass between {self.object_a} and "
            f"{self.object_b}?"
        )


def _check_defaults(default_robot_width_m: float | None, default_safety_margin_m: float) -> None:
    # A bad default is a configuration error, not a bad question, so it is a plain ValueError.
    if default_robot_width_m is not None and (
        not _finite(default_robot_width_m) or default_robot_width_m <= 0
    ):
        raise ValueError(
            f"default_robot_width_m must be a finite number > 0 m or None, got "
            f"{default_robot_width_m!r}"
        )
    if not _finite(default_safety_margin_m) or default_safety_margin_m < 0:
        raise ValueError(
            f"default_safety_margin_m must be a finite number >= 0 m, got "
            f"{default_safety_margin_m!r}"
        )


# --------------------------------------------------------------------------------------------
# Plain words

# "between 50 and 60 cm" is a range, not two objects, so a "between" followed by a number is skipped.
_BETWEEN_RE = re.compile(r"\bbetween\b(?!\s*(?:[\d\-\u2212]|\.\d))\s*", re.IGNORECASE)
# Where the second object's description ends: punctuation, or a word that starts a new clause
# ("... and the table wide enough for ...", "... and the wall with 10 cm to spare").
_OBJECTS_END_RE = re.compile(
    r"\s*(?:[?!;:()]|,(?!\d)|\.(?=\s|$)|$)"
    r"|\s+(?=(?:(?:wide|big|large|broad)\s+enough|enough|for|with|without|if|given|assuming|"
    r"leaving|keeping|so\s+that|at\s+least|while|when|to\s+(?:let|fit|pass|get|allow|"
    r"accommodate|drive|go))\b)",
    re.IGNORECASE,
)
# "the chair and" / "and the wall" still split, so that the missing side is named in the refusal.
_OBJECTS_SEPARATOR_RE = re.compile(r"(?:^|\s+)(?:and|&)(?:\s+|$)|\s*&\s*", re.IGNORECASE)
_DETERMINER_START_RE = re.compile(
    r"(?:the|a|an|this|that|these|those|my|our|your|its|their|his|her|some)\b", re.IGNORECASE
)
# Clause boundaries around the width and the margin: "a 60 cm robot | with 10 cm to spare".
# A comma before a digit is a decimal comma ("0,6 m"), which parse_distance reads.
_CLAUSE_SPLIT_RE = re.compile(
    r"[;:()?!]|,(?!\d)|\b(?:with|without|leaving|leave|keeping|keep|allowing|allow|plus|given|"
    r"assuming|if|needing|needs|requiring|requires|for)\b",
    re.IGNORECASE,
)
_MARGIN_WORD_RE = re.compile(r"\b(?:margin|clearance|buffer|spare|tolerance)\b", re.IGNORECASE)
# A margin "on each side" is per side; decide() compares the total clearance, so it counts twice.
_PER_SIDE_RE = re.compile(
    r"\b(?:(?:on\s+)?(?:each|either|every)\s+side|(?:on\s+)?both\s+sides|per\s+side)\b",
    re.IGNORECASE,
)
_NO_MARGIN_RE = re.compile(
    r"\b(?:no|zero|without(?:\s+(?:a|any))?)\s+(?:safety\s+)?(?:margin|clearance|buffer)\b",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"(?<![\w.])[-\u2212]?\s*\d+(?:[.,]\d+)?")
_NEGATIVE_RE = re.compile(
    r"(?<![\w.\d])[-\u2212]\s*\d|\b(?:minus|negative)\s+(?:\d|[a-z])", re.IGNORECASE
)


def _split_objects(span: str) -> tuple[str, str] | None:
    """The two descriptions in "X and Y"; None when there is no separator."""
    separators = list(_OBJECTS_SEPARATOR_RE.finditer(span))
    if not separators:
        return None
    # "the black and white chair and the wall": the "and" that starts a new noun phrase wins.
    chosen = next(
        (s for s in separators if _DETERMINER_START_RE.match(span, s.end())), separators[0]
    )
    return span[: chosen.start()], span[chosen.end() :]


def _clean_object(text: str) -> str:
    return text.strip().strip("\"'`\u2018\u2019\u201c\u201d").strip()


def _locate_objects(text: str) -> tuple[str, str, str]:
    """(object_a, object_b, the question text without the objects clause)."""
    match = _BETWEEN_RE.search(text)
    if match is None:
        raise GapQuestionError(
            "two objects are needed: say which gap, as 'between <object A> and <object B>'"
        )
    rest = text[match.end() :]
    end = _OBJECTS_END_RE.search(rest)
    span_end = end.start() if end is not None else len(rest)
    span = rest[:span_end]
    pair = _split_objects(span)
    if pair is None:
        one = _clean_object(span)
        if not one:
            raise GapQuestionError(
                "two objects are needed: nothing follows 'between'; say 'between <object A> and "
                "<object B>'"
            )
        raise GapQuestionError(
            f"two objects are needed: {one!r} is one description; say 'between <object A> and "
            f"<object B>' (e.g. 'between the left bin and the right bin')"
        )
    object_a, object_b = (_clean_object(p) for p in pair)
    for role, value in (("the first object", object_a), ("the second object", object_b)):
        problem = _object_problem(role, value)
        if problem:
            raise GapQuestionError(f"{problem}: say 'between <object A> and <object B>'")
    remainder = f"{text[: match.start()]} , {rest[span_end:]}"
    return object_a, object_b, remainder


def _clause_problem(what: str, clauses: Sequence[str]) -> str | None:
    """Why clauses that state no readable distance still cannot be ignored, or None."""
    joined = " ".join(clauses)
    if _NEGATIVE_RE.search(joined):
        return f"the {what} must not be negative (got {joined.strip()!r})"
    numbers = [m.group().strip() for m in _NUMBER_RE.finditer(joined)]
    if numbers:
        return (
            f"the {what} {numbers[0]!r} has no unit; write it with one, e.g. '60 cm', '0.6 m' or "
            "'2 ft'"
        )
    return None


_WORD_START_RE = re.compile(r"(?:^|(?<=[\s,;:()\[\]]))\S")
# Each distance found costs a pass over the text; a question states one or two, so a clause with more
# is refused rather than read (it also bounds the work a flood of junk text can cause).
_MAX_DISTANCES_PER_CLAUSE = 4


def _distances(text: str) -> list[float]:
    """Every distance ``parse_distance`` reads in ``text``, in order.

    parse_distance reports the last distance only, and "a 60 cm or a 70 cm robot" must not quietly
    become 70 cm. So: find the rightmost word start from which the rest still reads as that last
    distance (the start of its phrase, compounds like "5 ft 6 in" and ranges like "2-3 ft" kept
    whole), then read what comes before it the same way.
    """
    found: list[float] = []
    while (last := parse_distance(text)) is not None:
        starts = [m.start() for m in _WORD_START_RE.finditer(text)]
        cut = next(
            (k for k in reversed(starts) if (v := parse_distance(text[k:])) is not None
             and math.isclose(v, last, rel_tol=1e-12, abs_tol=1e-12)),
            0,
        )  # fmt: skip
        found.append(last)
        if cut == 0:
            break
        if len(found) >= _MAX_DISTANCES_PER_CLAUSE:
            raise GapQuestionError(
                f"too many distances in one phrase ({len(found)} or more); state the robot width "
                "once"
            )
        text = text[:cut]
    return found[::-1]


def _one_distance(what: str, found: Sequence[tuple[str, float]]) -> float | None:
    """The single distance stated for ``what``; the same value restated ("0.6 m (60 cm)") is one."""
    values = sorted({round(v, _NDIGITS) for _, v in found})
    if len(values) > 1:
        shown = ", ".join(f"{v:g} m" for v in values)
        raise GapQuestionError(f"more than one {what} is given ({shown}); give one")
    return values[0] if values else None


def parse_gap_question(
    text: str,
    default_robot_width_m: float | None = None,
    default_safety_margin_m: float = 0.1,
) -> GapQuery:
    """Read a gap question in plain words into a GapQuery.

    The objects come from "between <A> and <B>"; the robot width is the one distance stated
    elsewhere in the sentence ("a 60 cm wide robot", "a robot 0.8 m across", "a 2 ft wide cart"),
    read by ``parse_distance``; a margin may be stated too ("with 10 cm to spare", "with a safety
    margin of 5 cm", "5 cm on each side" counts twice, "with no margin" is 0). Without a stated
    width ``default_robot_width_m`` is used (the robot's own width, configured); without a stated
    margin, ``default_safety_margin_m``.

    Raises:
        GapQuestionError: the question cannot be answered as asked; the message says why (no
            objects, one object, the same object twice, no width and no default, a width or margin
            without a unit, a zero or negative width, two different widths).
        ValueError: a default is not a valid length.
    """
    _check_defaults(default_robot_width_m, default_safety_margin_m)
    if not isinstance(text, str):
        raise GapQuestionError(f"the question must be text, got {type(text).__name__}")
    question = text.strip()
    if not question:
        raise GapQuestionError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise GapQuestionError(
            f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})"
        )
    # Line breaks and tabs would otherwise end up in object names and the prompt.
    flat = " ".join(question.split())
    object_a, object_b, remainder = _locate_objects(flat)

    width_clauses: list[str] = []
    margin_found: list[tuple[str, float]] = []
    margin_unreadable: list[str] = []
    no_margin = _NO_MARGIN_RE.search(remainder) is not None
    for clause in _CLAUSE_SPLIT_RE.split(remainder):
        if not clause.strip():
            continue
        is_margin = _MARGIN_WORD_RE.search(clause) or _PER_SIDE_RE.search(clause)
        distances = _distances(clause)
        if is_margin and (distances or _NUMBER_RE.search(clause)):
            if len({round(d, _NDIGITS) for d in distances}) > 1:
                raise GapQuestionError(
                    f"more than one distance in {clause.strip()!r}; state the robot width and the "
                    "safety margin separately (e.g. 'a 60 cm robot with 10 cm to spare')"
                )
            if not distances:
                margin_unreadable.append(clause)
            else:
                per_side = 2 if _PER_SIDE_RE.search(clause) else 1
                margin_found.append((clause, distances[0] * per_side))
        else:
            width_clauses.append(clause)

    widths = [(c, v) for c in width_clauses for v in _distances(c)]
    robot_width_m = _one_distance("robot width", widths)
    if robot_width_m is None:
        problem = _clause_problem("robot width", width_clauses)
        if problem:
            raise GapQuestionError(problem)
        if default_robot_width_m is None:
            raise GapQuestionError(
                "no robot width: say how wide the robot is (e.g. 'a 60 cm wide robot') or "
                "configure a default robot width"
            )
        robot_width_m = float(default_robot_width_m)
    elif robot_width_m <= 0:
        raise GapQuestionError(f"the robot width must be greater than 0, got {robot_width_m:g} m")

    if margin_unreadable and not margin_found:
        problem = _clause_problem("safety margin", margin_unreadable)
        raise GapQuestionError(problem or "the safety margin cannot be read")
    safety_margin_m = _one_distance("safety margin", margin_found)
    if safety_margin_m is None:
        safety_margin_m = 0.0 if no_margin else float(default_safety_margin_m)

    return GapQuery("", object_a, object_b, robot_width_m, safety_margin_m, question)


# --------------------------------------------------------------------------------------------
# JSON requests


def _reject_constant(name: str) -> float:
    # Python's json reads NaN/Infinity by default; they are not JSON and not lengths.
    raise GapQuestionError(f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        # json.loads would silently keep the last one; a planner sending two widths has a bug.
        raise GapQuestionError(f"field {repeated[0]!r} is given more than once")
    return dict(pairs)


def _read_json(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(
            payload, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates
        )
    except GapQuestionError:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        position = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise GapQuestionError(f"malformed JSON request: {detail}{position}") from None
    if not isinstance(data, dict):
        raise GapQuestionError(
            f"a JSON request must be an object with fields {', '.join(_JSON_FIELDS)}; got a "
            f"{type(data).__name__}"
        )
    return data


def _request_id(data: dict[str, Any]) -> str:
    request_id = data.get("id", "")
    if not isinstance(request_id, str):
        raise GapQuestionError(
            f"id must be a string, got {type(request_id).__name__} {request_id!r}"
        )
    return request_id


def _length_field(data: dict[str, Any], name: str, request_id: str, zero_ok: bool) -> float | None:
    if name not in data:
        return None
    value = data[name]
    if not _real(value):
        raise GapQuestionError(
            f"{name} must be a number of metres, got {type(value).__name__} {value!r}", request_id
        )
    # Checked here as well as in GapQuery: in a question-only request these stand in for defaults.
    # 1e400 reads as inf and a 400-digit integer overflows float(); neither is a length.
    if not _finite(value):
        raise GapQuestionError(f"{name} must be a finite number of metres", request_id)
    if value < 0 or (value == 0 and not zero_ok):
        bound = "must not be negative" if zero_ok else "must be greater than 0 m"
        raise GapQuestionError(f"{name} {bound}, got {value!r}", request_id)
    return float(value)


def parse_gap_request(
    payload: str,
    default_robot_width_m: float | None = None,
    default_safety_margin_m: float = 0.1,
) -> GapQuery:
    """Read an ``affordance/query`` message: plain words, or a JSON object.

    JSON fields: ``object_a``, ``object_b`` (text), ``robot_width_m`` (metres; optional when a default
    is configured), optional ``id`` (string, echoed in the answer), ``safety_margin_m`` (metres) and
    ``question`` (text). A JSON object with a ``question`` and no objects is read as plain words and
    keeps its ``id`` -- the way to give a plain-words question an id; its ``robot_width_m`` and
    ``safety_margin_m``, if present, then stand in for what the words do not state.

    A payload starting with "{" or "[" is JSON and must parse completely: malformed text, a
    non-object, unknown or repeated fields, wrong types, NaN and trailing text are refused.

    Raises:
        GapQuestionError: why the request cannot be answered; ``request_id`` holds its id when it
            was readable.
        ValueError: a default is not a valid length.
    """
    _check_defaults(default_robot_width_m, default_safety_margin_m)
    if not isinstance(payload, str):
        raise GapQuestionError(f"the request must be text, got {type(payload).__name__}")
    if len(payload) > MAX_REQUEST_CHARS:
        raise GapQuestionError(
            f"the request is too long ({len(payload)} characters; at most {MAX_REQUEST_CHARS})"
        )
    stripped = payload.strip()
    if not stripped.startswith(("{", "[")):
        return parse_gap_question(stripped, default_robot_width_m, default_safety_margin_m)

    data = _read_json(stripped)
    request_id = _request_id(data)
    unknown = sorted(set(data) - set(_JSON_FIELDS))
    if unknown:
        raise GapQuestionError(
            f"unknown field {unknown[0]!r}; accepted: {', '.join(_JSON_FIELDS)}", request_id
        )
    question = data.get("question", "")
    if not isinstance(question, str):
        raise GapQuestionError(f"question must be text, got {type(question).__name__}", request_id)
    width = _length_field(data, "robot_width_m", request_id, zero_ok=False)
    margin = _length_field(data, "safety_margin_m", request_id, zero_ok=True)

    if "object_a" not in data and "object_b" not in data and question.strip():
        try:
            words = parse_gap_question(
                question,
                width if width is not None else default_robot_width_m,
                margin if margin is not None else default_safety_margin_m,
            )
        except GapQuestionError as exc:
            raise GapQuestionError(exc.reason, request_id) from None
        return GapQuery(
            request_id,
            words.object_a,
            words.object_b,
            words.robot_width_m,
            words.safety_margin_m,
            words.question,
        )

    missing = [name for name in ("object_a", "object_b") if name not in data]
    if width is None and default_robot_width_m is None:
        missing.append("robot_width_m")
    if missing:
        raise GapQuestionError(
            f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}", request_id
        )
    return GapQuery(
        request_id,
        data["object_a"],
        data["object_b"],
        width if width is not None else float(default_robot_width_m or 0.0),
        margin if margin is not None else float(default_safety_margin_m),
        question.strip(),
    )


# --------------------------------------------------------------------------------------------
# The chain: measure both orders, combine, decide


def validate_gap_template(template: str) -> str | None:
    """Why ``template`` cannot be a gap question template, or None when it can.

    It must be text that names both objects, ``{a}`` and ``{b}``, and no other field.
    """
    if not isinstance(template, str) or not template.strip():
        return "the gap question template is empty"
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"the gap question template is not a valid format string: {exc}"
    other = sorted(fields - {"a", "b"})
    if other:
        return (
            f"the gap question template has unknown field {{{other[0]}}}; accepted: {{a}}, {{b}}"
        )
    missing = sorted({"a", "b"} - fields)
    if missing:
        return (
            f"the gap question template must contain {{{missing[0]}}} (the objects are {{a}} "
            "and {b})"
        )
    return None


def gap_queries(
    query: GapQuery, template: str = DEFAULT_GAP_TEMPLATE
) -> tuple[SpatialQuery, SpatialQuery]:
    """The gap-width question asked A-then-B and B-then-A (VLMs are known to flip with order)."""
    problem = validate_gap_template(template)
    if problem:
        raise ValueError(problem)
    a, b = query.object_a, query.object_b
    return (
        SpatialQuery("gap_width", a, b, template.format(a=a, b=b)),
        SpatialQuery("gap_width", b, a, template.format(a=b, b=a)),
    )


def decide(
    gap_width_m: float | None, robot_width_m: float, safety_margin_m: float
) -> tuple[float | None, bool | None]:
    """(clearance_m, fits) for a measured gap: clearance = gap - robot width; fits when the clearance
    is at least the safety margin (within FIT_EPSILON_M), (None, None) when the gap is unknown.

    The clearance is rounded to the nanometre so float noise does not show in the answer.
    """
    if not _finite(robot_width_m) or robot_width_m <= 0:
        raise ValueError(f"robot_width_m must be a finite length > 0 m, got {robot_width_m!r}")
    if not _finite(safety_margin_m) or safety_margin_m < 0:
        raise ValueError(
            f"safety_margin_m must be a finite length >= 0 m, got {safety_margin_m!r}"
        )
    if gap_width_m is None:
        return None, None
    if not _finite(gap_width_m) or gap_width_m < 0:
        raise ValueError(
            f"gap_width_m must be a finite length >= 0 m or None, got {gap_width_m!r}"
        )
    clearance_m = round(float(gap_width_m) - float(robot_width_m), _NDIGITS)
    return clearance_m, clearance_m >= safety_margin_m - FIT_EPSILON_M


def _finite_or_none(value: Any) -> float | None:
    if not _finite(value):
        return None
    return float(value)


def _bare(metres: float) -> str:
    """format_distance without its hedge: "about 90 cm" -> "90 cm" (one hedge per sentence)."""
    words = format_distance(metres)
    for hedge in ("about ", "roughly "):
        if words.startswith(hedge):
            return words[len(hedge) :]
    return words


def _sentence(
    query: GapQuery,
    gap_width_m: float | None,
    clearance_m: float | None,
    fits: bool | None,
    notes: Sequence[str],
    reason: str | None,
) -> str:
    if gap_width_m is None or clearance_m is None:
        text = (
            f"Unknown: could not measure the gap between {query.object_a} and {query.object_b}"
            f" ({reason or 'no gap width'})"
        )
    else:
        gap_words = format_distance(gap_width_m)
        if clearance_m < 0:
            relation = f"{_bare(-clearance_m)} narrower than the robot"
        elif _bare(clearance_m) == "0 cm":
            relation = "just as wide as the robot"
        elif fits:
            relation = f"{_bare(clearance_m)} wider than the robot"
        else:
            relation = f"only {_bare(clearance_m)} wider than the robot"
        text = f"{'Yes' if fits else 'No'}: the gap is {gap_words}, {relation}"
        if not fits and clearance_m >= 0:
            text += f"; the safety margin is {_bare(query.safety_margin_m)}"
    for note in notes:
        text += f"; {note}"
    # One line, whatever the model wrote into a reason.
    return " ".join(f"{text}.".split())


@dataclass
class GapAnswer:
    """The answer to one GapQuery: the measured gap, the decision, a sentence and the steps behind it.

    ``to_dict`` is the JSON body of ``affordance/answer``; the node adds ``stamp``, ``frame_id`` and
    ``latency_ms``.
    """

    id: str
    question: str
    object_a: str
    object_b: str
    gap_width_m: float | None
    robot_width_m: float | None
    safety_margin_m: float | None
    clearance_m: float | None
    fits: bool | None
    consistent: bool | None
    answer: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None

    @classmethod
    def refusal(
        cls,
        reason: str,
        *,
        query: GapQuery | None = None,
        request_id: str = "",
        question: str = "",
    ) -> GapAnswer:
        """An answer that measured nothing: a request that could not be read (no query), or a
        readable one that could not be measured (no frame, stale frame, busy)."""
        if query is None:
            sentence = " ".join(f"Unknown: could not read the question ({reason}).".split())
            return cls(request_id, question, "", "", None, None, None, None, None, None,
                       sentence, [], reason)  # fmt: skip
        return cls(
            query.id,
            query.question,
            query.object_a,
            query.object_b,
            None,
            query.robot_width_m,
            query.safety_margin_m,
            None,
            None,
            None,
            _sentence(query, None, None, None, (), reason),
            [],
            reason,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats are finite or None, never NaN."""

        def length(value: Any) -> float | None:
            number = _finite_or_none(value)
            return None if number is None else round(number, _NDIGITS)

        return {
            "id": self.id,
            "question": self.question,
            "object_a": self.object_a,
            "object_b": self.object_b,
            "gap_width_m": length(self.gap_width_m),
            "robot_width_m": length(self.robot_width_m),
            "safety_margin_m": length(self.safety_margin_m),
            "clearance_m": length(self.clearance_m),
            "fits": self.fits,
            "consistent": self.consistent,
            "answer": self.answer,
            "steps": [_clean_step(step) for step in self.steps],
            "reason": self.reason,
        }


def _clean_step(step: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in step.items():
        if isinstance(value, float):
            clean[key] = _finite_or_none(value)
        elif isinstance(value, list):
            clean[key] = [_finite_or_none(v) if isinstance(v, float) else v for v in value]
        else:
            clean[key] = value
    return clean


def _no_number_reason(estimate: Estimate) -> str:
    if estimate.reason:
        return estimate.reason
    if estimate.value_m is None:
        return "no distance in the answer"
    return f"not a usable length: {repr(estimate.value_m)[:40]}"


def _step(order: str, estimate: Estimate, value_m: float | None) -> dict[str, Any]:
    return {
        "order": order,
        "question": estimate.query.text,
        "object_a": estimate.query.object_a,
        "object_b": estimate.query.object_b,
        "raw_answers": [str(r) for r in estimate.raw_answers],
        "values_m": [_finite_or_none(v) for v in estimate.sample_values_m],
        "value_m": value_m,
        "reason": _no_number_reason(estimate) if value_m is None else None,
    }


def gap_answer_from_estimates(
    query: GapQuery,
    estimates: Sequence[Estimate],
    max_disagreement_ratio: float = 1.5,
) -> GapAnswer:
    """Combine the two order estimates of ``gap_queries(query)`` and decide.

    The gap is the mean of the readable estimates; with one readable order it is that one and the
    answer says so. ``consistent`` is False when the larger estimate exceeds the smaller by more than
    ``max_disagreement_ratio`` (None with fewer than two numbers). Separate from ``answer_gap`` so a
    node can batch several queries' questions into one estimator call.
    """
    if not _real(max_disagreement_ratio) or not max_disagreement_ratio >= 1:
        raise ValueError(
            f"max_disagreement_ratio must be a number >= 1, got {max_disagreement_ratio!r}"
        )
    if len(estimates) != 2:
        raise ValueError(f"expected 2 estimates (A-then-B, B-then-A), got {len(estimates)}")
    orders = ("a_then_b", "b_then_a")
    values: list[float | None] = []
    for estimate in estimates:
        value = _finite_or_none(estimate.value_m)
        # A negative "gap" is a backend bug, not a measurement; treat it as no number.
        values.append(value if value is not None and value >= 0 else None)
    steps = [_step(order, e, v) for order, e, v in zip(orders, estimates, values, strict=True)]
    numbers = [v for v in values if v is not None]

    notes: list[str] = []
    reason: str | None = None
    consistent: bool | None = None
    gap_width_m: float | None = None
    if not numbers:
        reasons = [_no_number_reason(e) for e in estimates]
        reason = (
            f"neither object order gave a gap width: {reasons[0]}"
            if reasons[0] == reasons[1]
            else f"neither object order gave a gap width: {reasons[0]}; {reasons[1]}"
        )
    elif len(numbers) == 1:
        gap_width_m = numbers[0]
        silent = estimates[values.index(None)].query
        notes.append(
            f"measured in one object order only (asking {silent.object_a} then "
            f"{silent.object_b} gave no number)"
        )
    else:
        gap_width_m = sum(numbers) / 2
        low, high = min(numbers), max(numbers)
        # Two zeros agree; a zero against anything else is an unbounded ratio.
        consistent = high == 0 or (low > 0 and high / low <= max_disagreement_ratio)
        if not consistent:
            notes.append(
                f"the two object orders disagree ({format_distance(values[0] or 0.0)} vs "
                f"{format_distance(values[1] or 0.0)})"
            )

    clearance_m, fits = decide(gap_width_m, query.robot_width_m, query.safety_margin_m)
    return GapAnswer(
        id=query.id,
        question=query.question,
        object_a=query.object_a,
        object_b=query.object_b,
        gap_width_m=None if gap_width_m is None else round(gap_width_m, _NDIGITS),
        robot_width_m=query.robot_width_m,
        safety_margin_m=query.safety_margin_m,
        clearance_m=clearance_m,
        fits=fits,
        consistent=consistent,
        answer=_sentence(query, gap_width_m, clearance_m, fits, notes, reason),
        steps=steps,
        reason=reason,
    )


def answer_gap(
    estimator: Estimator,
    frame: Frame,
    query: GapQuery,
    template: str = DEFAULT_GAP_TEMPLATE,
    max_disagreement_ratio: float = 1.5,
) -> GapAnswer:
    """Measure the gap on ``frame`` in both object orders (one batched estimator call) and decide.

    Estimator exceptions (out of memory, a dead backend) propagate: the caller decides whether that
    is a refused answer or a failed node; an unanswerable question is not an exception.
    """
    queries = gap_queries(query, template)
    estimates = estimator.estimate([(frame, q) for q in queries])
    if len(estimates) != len(queries):
        raise RuntimeError(
            f"estimator {getattr(estimator, 'backend', '?')!r} returned {len(estimates)} estimates "
            f"for {len(queries)} queries"
        )
    return gap_answer_from_estimates(query, estimates, max_disagreement_ratio)
