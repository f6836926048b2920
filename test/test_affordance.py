"""Core tests for the navigation-gap affordance: reading questions, the two-order chain, the decision.

No ROS graph and no model: the estimator is a scripted stand-in whose raw answer text goes through the
real combine_answers / parse_distance path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from spatialvlm_ros.spatial.affordance import (
    DEFAULT_GAP_TEMPLATE,
    FIT_EPSILON_M,
    MAX_QUESTION_CHARS,
    MAX_REQUEST_CHARS,
    GapAnswer,
    GapQuery,
    GapQuestionError,
    answer_gap,
    decide,
    gap_answer_from_estimates,
    gap_queries,
    parse_gap_question,
    parse_gap_request,
    validate_gap_template,
)
from spatialvlm_ros.spatial.estimator import Estimate, Frame, SpatialQuery, combine_answers

FT = 0.3048
IN = 0.0254

# ------------------------------------------------------------------------------------------------
# Plain-words questions

# (question, object_a, object_b, robot_width_m, safety_margin_m); default margin 0.1, no default width.
ACCEPTED = [
    # the issue's own phrasings
    ("Can a 60 cm wide robot get between the chair and the wall?",
     "the chair", "the wall", 0.6, 0.1),
    ("Will a robot 0.8 m across fit through the gap between the sofa and the coffee table?",
     "the sofa", "the coffee table", 0.8, 0.1),
    ("Can a 0.6 m wide robot pass between the sofa and the table?",
     "the sofa", "the table", 0.6, 0.1),
    ("How about a 75cm robot between the door frame and the shelf?",
     "the door frame", "the shelf", 0.75, 0.1),
    ("is there room for a 2 ft wide cart between the left bin and the right bin?",
     "the left bin", "the right bin", 2 * FT, 0.1),
    # the width after the objects, or before them in another clause
    ("Is the gap between the sofa and the table wide enough for a 60 cm robot?",
     "the sofa", "the table", 0.6, 0.1),
    ("Is there enough clearance for a 55 cm robot between the sofa and the table?",
     "the sofa", "the table", 0.55, 0.1),
    ("Between the fridge and the counter, can a robot that is half a metre wide get through?",
     "the fridge", "the counter", 0.5, 0.1),
    ("between the sofa and the table: can a 60 cm robot get through?",
     "the sofa", "the table", 0.6, 0.1),
    ("Robot width: 0.6 m. Gap: between the crate and the pallet?",
     "the crate", "the pallet", 0.6, 0.1),
    # units and number forms parse_distance reads
    ("Can a 24-inch-wide cart pass between the desk & the filing cabinet?",
     "the desk", "the filing cabinet", 24 * IN, 0.1),
    ("can a sixty centimetre wide robot drive between the bin and the door",
     "the bin", "the door", 0.6, 0.1),
    ("Can a robot one and a half feet wide pass between the sofa and the table?",
     "the sofa", "the table", 1.5 * FT, 0.1),
    ("Can a 2'6\" wide cart roll between the pillar and the wall?",
     "the pillar", "the wall", 2.5 * FT, 0.1),
    ("Can a 600 mm wide robot get between the red box and the blue box?",
     "the red box", "the blue box", 0.6, 0.1),
    ("Could a robot 3 ft wide make it between the couch and the armchair?",
     "the couch", "the armchair", 3 * FT, 0.1),
    ("Can a robot 0,6 m wide go between the sofa and the table?",  # decimal comma, not a clause
     "the sofa", "the table", 0.6, 0.1),
    ("Can a 0.6 m (60 cm) robot pass between the sofa and the table?",  # restated: one width
     "the sofa", "the table", 0.6, 0.1),
    ("Can a robot between 50 and 60 cm wide pass between the sofa and the table?",
     # a range is not the objects' "between"; parse_distance reads a range as its midpoint
     "the sofa", "the table", 0.55, 0.1),
    # object descriptions
    ("Can a robot with a width of 55 cm squeeze between the black and white chair and the wall?",
     "the black and white chair", "the wall", 0.55, 0.1),
    ("Can a 60 cm robot pass between shelf 2 and shelf 3?", "shelf 2", "shelf 3", 0.6, 0.1),
    ("CAN A 60 CM ROBOT PASS BETWEEN THE SOFA AND THE TABLE?", "THE SOFA", "THE TABLE", 0.6, 0.1),
    ("Can a   60 cm\nwide robot pass between the sofa\tand the table?",
     "the sofa", "the table", 0.6, 0.1),
    ("Can a 60 cm robot pass between \"the red chair\" and 'the wall'?",
     "the red chair", "the wall", 0.6, 0.1),
    # a safety margin in the question
    ("Can a 60 cm robot pass between the sofa and the table with 20 cm to spare?",
     "the sofa", "the table", 0.6, 0.2),
    ("Can a 60 cm robot pass between the sofa and the table with a safety margin of 15 cm?",
     "the sofa", "the table", 0.6, 0.15),
    ("Will my 70cm-wide robot fit between the trolley and the bed, with 5 cm to spare?",
     "the trolley", "the bed", 0.7, 0.05),
    ("Can a 60 cm robot pass between the sofa and the table with 4 cm on each side?",
     "the sofa", "the table", 0.6, 0.08),  # per side counts twice in the total clearance
    ("Can a 60 cm robot pass between the sofa and the table keeping 10 cm clearance on either "
     "side?", "the sofa", "the table", 0.6, 0.2),
    ("Can a 60 cm robot pass between the sofa and the table with no margin?",
     "the sofa", "the table", 0.6, 0.0),
]  # fmt: skip

# (question, words the reason must contain)
REFUSED = [
    ("is there room for a 2 ft wide cart between the bins?",
     "two objects are needed: 'the bins' is one description"),
    ("", "the question is empty"),
    ("   \n ", "the question is empty"),
    ("Can a 60 cm robot pass through the doorway?", "say which gap"),
    ("Can a 60 cm robot pass between the sofa?", "'the sofa' is one description"),
    ("Can a 60 cm robot pass between?", "nothing follows 'between'"),
    ("Can a 60 cm robot pass between the chair and?", "the second object is missing"),
    ("Can a 60 cm robot pass between and the wall?", "the first object is missing"),
    ("Can a 60 cm robot pass between the and the wall?", "the first object 'the' names no object"),
    ("Can a 60 cm robot pass between the chair and the chair?", "the same object ('the chair')"),
    ("Can a 60 cm robot pass between the chair and The  Chair?", "the same object"),
    ("Can the robot pass between the sofa and the table?", "no robot width"),
    ("Can a 60 wide robot pass between the sofa and the table?",
     "the robot width '60' has no unit"),
    ("Can a -60 cm robot pass between the sofa and the table?",
     "the robot width must not be negative"),
    ("Can a 0 cm robot pass between the sofa and the table?",
     "the robot width must be greater than 0"),
    ("Can a 60 cm robot or a 70 cm robot pass between the sofa and the table?",
     "more than one robot width is given (0.6 m, 0.7 m)"),
    ("Can a 60 cm robot pass between the sofa and the table with a 10 margin?",
     "the safety margin '10' has no unit"),
    ("Can a 60 cm robot pass between the sofa and the table with -5 cm to spare?",
     "the safety margin must not be negative"),
    ("Can a 60 cm robot 10 cm margin pass between the sofa and the table?",
     "more than one distance in"),
    ("Can a 1 m 1 m 1 m 1 m 1 m robot pass between the sofa and the table?",
     "too many distances in one phrase"),
    ("Can a 60 cm robot pass between the sofa and the table? " + "x" * MAX_QUESTION_CHARS,
     "the question is too long"),
]  # fmt: skip


def test_there_are_enough_phrasings() -> None:
    assert len(ACCEPTED) + len(REFUSED) >= 35
    assert len(REFUSED) >= 10


@pytest.mark.parametrize(("text", "object_a", "object_b", "width_m", "margin_m"), ACCEPTED)
def test_reads_question(
    text: str, object_a: str, object_b: str, width_m: float, margin_m: float
) -> None:
    query = parse_gap_question(text)
    assert (query.object_a, query.object_b) == (object_a, object_b)
    assert query.robot_width_m == pytest.approx(width_m, abs=1e-9)
    assert query.safety_margin_m == pytest.approx(margin_m, abs=1e-9)
    assert query.question == text.strip()
    assert query.id == ""  # ids come in JSON only


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refuses_question_with_reason(text: str, reason: str) -> None:
    with pytest.raises(GapQuestionError) as caught:
        parse_gap_question(text)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_the_bins_refusal_says_how_to_ask() -> None:
    with pytest.raises(GapQuestionError, match="between the left bin and the right bin"):
        parse_gap_question("is there room for a 2 ft wide cart between the bins?")


def test_default_width_is_the_robots_own() -> None:
    query = parse_gap_question(
        "Can the robot pass between the sofa and the table?", default_robot_width_m=0.55
    )
    assert query.robot_width_m == 0.55
    assert query.safety_margin_m == 0.1


def test_stated_width_and_margin_win_over_defaults() -> None:
    query = parse_gap_question(
        "Can a 70 cm robot pass between the sofa and the table with 3 cm to spare?",
        default_robot_width_m=0.55,
        default_safety_margin_m=0.2,
    )
    assert (query.robot_width_m, query.safety_margin_m) == (0.7, 0.03)


def test_default_margin_applies_when_none_stated() -> None:
    query = parse_gap_question(
        "Can we get between the sofa and the table?",
        default_robot_width_m=0.5,
        default_safety_margin_m=0.0,
    )
    assert query.safety_margin_m == 0.0


def test_unitless_width_is_refused_even_with_a_default() -> None:
    # A number the user wrote is never replaced by the configured width.
    with pytest.raises(GapQuestionError, match="has no unit"):
        parse_gap_question("Can a 60 robot pass between A and B?", default_robot_width_m=0.5)


@pytest.mark.parametrize(
    ("width", "margin"), [(0.0, 0.1), (-1.0, 0.1), (math.nan, 0.1), (0.5, -0.1), (0.5, math.inf)]
)
def test_bad_defaults_are_configuration_errors(width: float, margin: float) -> None:
    with pytest.raises(ValueError, match="default_") as caught:
        parse_gap_question("Can a robot pass between A and B?", width, margin)
    assert not isinstance(caught.value, GapQuestionError)


def test_non_text_question_is_refused() -> None:
    with pytest.raises(GapQuestionError, match="must be text"):
        parse_gap_question(42)  # type: ignore[arg-type]


def test_lengths_are_clean_numbers() -> None:
    # 70 * 0.01 is 0.7000000000000001 in floating point; the query carries 0.7.
    assert parse_gap_question("Can a 70 cm robot pass between A and B?").robot_width_m == 0.7


# ------------------------------------------------------------------------------------------------
# GapQuery validation


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"robot_width_m": 0.0}, "robot_width_m must be greater than 0"),
        ({"robot_width_m": -0.5}, "robot_width_m must be greater than 0"),
        ({"robot_width_m": math.nan}, "robot_width_m must be a finite number"),
        ({"robot_width_m": math.inf}, "robot_width_m must be a finite number"),
        ({"robot_width_m": True}, "robot_width_m must be a finite number"),
        ({"safety_margin_m": -0.01}, "safety_margin_m must not be negative"),
        ({"safety_margin_m": math.nan}, "safety_margin_m must be a finite number"),
        ({"object_a": ""}, "object_a is missing"),
        ({"object_b": "   "}, "object_b is missing"),
        ({"object_a": None}, "object_a must be text"),
        ({"object_b": "The sofa"}, "the same object"),
        ({"object_a": "x" * 201}, "object_a is too long"),
        ({"id": 7}, "id must be a string"),
    ],
)
def test_gap_query_validation_names_the_problem(kwargs: dict, reason: str) -> None:
    fields = {"id": "", "object_a": "the sofa", "object_b": "the table", "robot_width_m": 0.6,
              "safety_margin_m": 0.1}  # fmt: skip
    fields.update(kwargs)
    with pytest.raises(GapQuestionError, match=reason):
        GapQuery(**fields)


def test_gap_query_is_frozen_and_normalised() -> None:
    query = GapQuery("q", "  the sofa ", "the table", 1, 0)
    assert query.object_a == "the sofa"
    assert isinstance(query.robot_width_m, float) and isinstance(query.safety_margin_m, float)
    assert query.question == "Can a 1 m wide robot pass between the sofa and the table?"
    with pytest.raises(AttributeError):
        query.robot_width_m = 2.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# JSON requests


def test_json_request_full() -> None:
    query = parse_gap_request(json.dumps({
        "id": "nav-17", "object_a": "the sofa", "object_b": "the table", "robot_width_m": 0.6,
        "safety_margin_m": 0.05, "question": "sofa/table gap",
    }))  # fmt: skip
    assert query == GapQuery("nav-17", "the sofa", "the table", 0.6, 0.05, "sofa/table gap")


def test_json_request_minimal_uses_defaults_and_writes_a_question() -> None:
    query = parse_gap_request(
        '  \n{"object_a": "the sofa", "object_b": "the table"}\n', default_robot_width_m=0.5
    )
    assert (query.id, query.robot_width_m, query.safety_margin_m) == ("", 0.5, 0.1)
    assert query.question == "Can a 0.5 m wide robot pass between the sofa and the table?"


def test_json_integer_width_becomes_float() -> None:
    query = parse_gap_request('{"id": "a", "object_a": "A", "object_b": "B", "robot_width_m": 1}')
    assert query.robot_width_m == 1.0 and isinstance(query.robot_width_m, float)


def test_json_question_only_carries_an_id_for_plain_words() -> None:
    query = parse_gap_request(
        '{"id": "w1", "question": "Can a 60 cm robot pass between the sofa and the table?"}'
    )
    assert (query.id, query.object_a, query.object_b, query.robot_width_m) == (
        "w1",
        "the sofa",
        "the table",
        0.6,
    )


def test_json_question_only_fields_stand_in_for_what_words_omit() -> None:
    query = parse_gap_request(json.dumps({
        "id": "w2", "question": "Can we pass between the sofa and the table?",
        "robot_width_m": 0.45, "safety_margin_m": 0.0,
    }))  # fmt: skip
    assert (query.robot_width_m, query.safety_margin_m) == (0.45, 0.0)
    # ...but what the words state wins
    query = parse_gap_request(json.dumps({
        "question": "Can a 60 cm robot pass between the sofa and the table?", "robot_width_m": 0.45,
    }))  # fmt: skip
    assert query.robot_width_m == 0.6


def test_plain_words_through_parse_gap_request() -> None:
    query = parse_gap_request("Can a 60 cm wide robot get between the chair and the wall?")
    assert (query.object_a, query.object_b, query.robot_width_m) == ("the chair", "the wall", 0.6)


_OK = '"object_a": "the sofa", "object_b": "the table", "robot_width_m": 0.6'

# (payload, words the reason must contain, the id the refusal must carry)
MALFORMED = [
    ("{", "malformed JSON request", ""),
    ('{"id": "m1", ' + _OK, "malformed JSON request", ""),  # truncated
    ("{" + _OK + "} and more", "malformed JSON request: Extra data", ""),
    ("{" + _OK + "}{}", "malformed JSON request: Extra data", ""),
    ("{'object_a': 'the sofa'}", "malformed JSON request", ""),  # Python, not JSON
    ("[1, 2]", "must be an object", ""),
    ("[" * 3000, "malformed JSON request", ""),
    ("{}", "missing fields: object_a, object_b, robot_width_m", ""),
    ('{"id": "m2", "object_a": "the sofa", "robot_width_m": 0.6}', "missing field: object_b", "m2"),
    ('{"id": "m3", "object_a": "the sofa", "object_b": "the table"}',
     "missing field: robot_width_m", "m3"),
    ('{"id": "m4", "object_a": "A", "object_b": "B", "robot_width_m": "60 cm"}',
     "robot_width_m must be a number of metres, got str", "m4"),
    ('{"id": "m5", "object_a": "A", "object_b": "B", "robot_width_m": true}',
     "robot_width_m must be a number of metres, got bool", "m5"),
    ('{"id": "m6", "object_a": "A", "object_b": "B", "robot_width_m": -0.6}',
     "robot_width_m must be greater than 0", "m6"),
    ('{"id": "m7", "object_a": "A", "object_b": "B", "robot_width_m": NaN}',
     "NaN is not a number JSON allows", ""),
    ('{"id": "m8", "object_a": "A", "object_b": "B", "robot_width_m": 1e400}',
     "robot_width_m must be a finite number", "m8"),
    ('{"id": "m9", "object_a": "A", "object_b": "B", "robot_width_m": 1' + "0" * 400 + "}",
     "robot_width_m must be a finite number", "m9"),
    ('{"id": "m10", "object_a": 5, "object_b": "B", "robot_width_m": 0.6}',
     "object_a must be text, got int", "m10"),
    ('{"id": 7, ' + _OK + "}", "id must be a string, got int", ""),
    ('{"id": "m11", "robot_width": 0.6, ' + _OK + "}", "unknown field 'robot_width'", "m11"),
    ('{"id": "m12", ' + _OK + ', "robot_width_m": 0.7}',
     "field 'robot_width_m' is given more than once", ""),
    ('{"id": "m13", "object_a": "the sofa", "object_b": "the sofa", "robot_width_m": 0.6}',
     "the same object", "m13"),
    ('{"id": "m14", ' + _OK + ', "safety_margin_m": -0.1}',
     "safety_margin_m must not be negative", "m14"),
    ('{"id": "m15", ' + _OK + ', "question": 3}', "question must be text", "m15"),
    ('{"id": "m16", "question": "Can it pass?"}', "two objects are needed", "m16"),
    ('{"id": "m17", "object_a": "the sofa", "question": "Can a 1 m robot pass between A and B?"}',
     "missing field", "m17"),
    ("{" + " " * MAX_REQUEST_CHARS + "}", "the request is too long", ""),
]  # fmt: skip


def test_there_are_enough_malformed_requests() -> None:
    assert len(MALFORMED) >= 8


@pytest.mark.parametrize(("payload", "reason", "request_id"), MALFORMED)
def test_malformed_request_is_refused_with_reason(
    payload: str, reason: str, request_id: str
) -> None:
    with pytest.raises(GapQuestionError) as caught:
        parse_gap_request(payload)
    assert reason in caught.value.reason
    assert caught.value.request_id == request_id


def test_non_text_request_is_refused() -> None:
    with pytest.raises(GapQuestionError, match="must be text"):
        parse_gap_request(b"{}")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Questions to the model


QUERY = GapQuery("g1", "the sofa", "the table", 0.6, 0.1, "Can a 60 cm robot pass?")


def test_gap_queries_ask_both_orders() -> None:
    forward, backward = gap_queries(QUERY, DEFAULT_GAP_TEMPLATE)
    assert forward == SpatialQuery(
        "gap_width", "the sofa", "the table",
        "How wide is the gap between the sofa and the table? Answer with a distance in metres.",
    )  # fmt: skip
    assert (backward.object_a, backward.object_b) == ("the table", "the sofa")
    assert backward.text.startswith("How wide is the gap between the table and the sofa?")


def test_braces_in_object_names_are_not_template_fields() -> None:
    query = GapQuery("", "the {left} box", "the wall", 0.6, 0.1)
    forward, _ = gap_queries(query, "Gap between {a} and {b}?")
    assert forward.text == "Gap between the {left} box and the wall?"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("", "empty"),
        ("How wide is the gap next to {a}?", "must contain {b}"),
        ("Gap between {a} and {b} for {robot}?", "unknown field {robot}"),
        ("Gap between {a} and {b", "not a valid format string"),
        ("Gap between {0} and {1}?", "unknown field {0}"),
    ],
)
def test_bad_template_is_refused(template: str, reason: str) -> None:
    problem = validate_gap_template(template)
    assert problem is not None and reason in problem
    with pytest.raises(ValueError, match="template"):
        gap_queries(QUERY, template)


def test_default_template_is_valid() -> None:
    assert validate_gap_template(DEFAULT_GAP_TEMPLATE) is None


# ------------------------------------------------------------------------------------------------
# The decision


def test_exactly_at_the_margin_fits() -> None:
    # 0.7 - 0.6 is 0.09999999999999998 in floating point; it is the margin, so it fits.
    assert 0.7 - 0.6 < 0.1
    assert decide(0.7, 0.6, 0.1) == (0.1, True)
    assert decide(0.6, 0.6, 0.0) == (0.0, True)


def test_just_below_the_margin_does_not_fit() -> None:
    clearance, fits = decide(0.7 - 10 * FIT_EPSILON_M, 0.6, 0.1)
    assert fits is False
    assert clearance == pytest.approx(0.1 - 10 * FIT_EPSILON_M, abs=1e-12)
    assert decide(0.69, 0.6, 0.1)[1] is False


def test_clearance_below_margin_but_positive_does_not_fit() -> None:
    assert decide(0.65, 0.6, 0.1) == (0.05, False)


def test_negative_clearance() -> None:
    assert decide(0.5, 0.6, 0.0) == (-0.1, False)
    assert decide(0.0, 0.6, 0.1) == (-0.6, False)


def test_unknown_gap_decides_nothing() -> None:
    assert decide(None, 0.6, 0.1) == (None, None)


@pytest.mark.parametrize(
    ("gap", "width", "margin", "reason"),
    [
        (math.nan, 0.6, 0.1, "gap_width_m"),
        (-0.1, 0.6, 0.1, "gap_width_m"),
        (math.inf, 0.6, 0.1, "gap_width_m"),
        (1.0, 0.0, 0.1, "robot_width_m"),
        (1.0, math.nan, 0.1, "robot_width_m"),
        (1.0, 0.6, -0.1, "safety_margin_m"),
        (1.0, 0.6, True, "safety_margin_m"),
    ],
)
def test_decide_refuses_impossible_lengths(
    gap: float, width: float, margin: float, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        decide(gap, width, margin)


# ------------------------------------------------------------------------------------------------
# The chain, with a scripted stand-in for the model


class ScriptedModelStandIn:
    """A scripted stand-in for the model (implements the Estimator protocol).

    Answers each gap question with the raw text scripted for its object order, read through the real
    combine_answers / parse_distance, and records every estimate() call.
    """

    backend = "scripted"
    model_name = "scripted stand-in for the model"

    def __init__(self, answers: dict[tuple[str, str], list[str]]) -> None:
        self.answers = answers
        self.calls: list[list[tuple[Frame, SpatialQuery]]] = []

    def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]]) -> list[Estimate]:
        self.calls.append(list(items))
        return [combine_answers(q, self.answers[(q.object_a, q.object_b)]) for _, q in items]

    def close(self) -> None:
        pass


FRAME = Frame(np.zeros((4, 6, 3), dtype=np.uint8))


def ask(
    forward: list[str],
    backward: list[str],
    query: GapQuery = QUERY,
    ratio: float = 1.5,
) -> tuple[GapAnswer, ScriptedModelStandIn]:
    model = ScriptedModelStandIn({
        (query.object_a, query.object_b): forward, (query.object_b, query.object_a): backward,
    })  # fmt: skip
    answer = answer_gap(model, FRAME, query, DEFAULT_GAP_TEMPLATE, ratio)
    return answer, model


def test_both_orders_go_in_one_estimate_call() -> None:
    _, model = ask(["about 1.5 m"], ["1.5 metres"])
    assert len(model.calls) == 1
    (first_frame, first), (second_frame, second) = model.calls[0]
    assert first_frame is FRAME and second_frame is FRAME
    assert (first.object_a, first.object_b) == ("the sofa", "the table")
    assert (second.object_a, second.object_b) == ("the table", "the sofa")
    assert first.kind == second.kind == "gap_width"


def test_two_numbers_are_averaged() -> None:
    answer, _ = ask(["The gap is about 1.2 m."], ["roughly 180 cm"])
    assert answer.gap_width_m == pytest.approx(1.5)
    assert answer.consistent is True
    assert answer.clearance_m == pytest.approx(0.9)
    assert answer.fits is True
    assert answer.reason is None


def test_sampled_answers_per_order_are_combined_first() -> None:
    # Each order's samples are combined by the estimator (median) before the two orders are.
    answer, _ = ask(["1 m", "1.2 m", "50 m"], ["1.4 m"])
    assert answer.steps[0]["value_m"] == pytest.approx(1.2)
    assert answer.gap_width_m == pytest.approx(1.3)


def test_one_order_without_a_number_uses_the_other_and_says_so() -> None:
    answer, _ = ask(["I cannot tell from this image."], ["about 1.5 m"])
    assert answer.gap_width_m == pytest.approx(1.5)
    assert answer.consistent is None
    assert answer.fits is True
    assert "measured in one object order only" in answer.answer
    assert "the sofa then the table gave no number" in answer.answer
    assert answer.steps[0]["value_m"] is None
    assert "no distance" in answer.steps[0]["reason"]


def test_both_orders_without_a_number_is_unknown() -> None:
    answer, _ = ask(["I cannot tell."], ["It depends."])
    assert (answer.gap_width_m, answer.clearance_m, answer.fits, answer.consistent) == (
        None,
        None,
        None,
        None,
    )
    assert answer.reason is not None
    assert answer.reason.startswith("neither object order gave a gap width")
    assert "I cannot tell." in answer.reason and "It depends." in answer.reason


def test_disagreement_at_the_ratio_is_consistent() -> None:
    answer, _ = ask(["1 m"], ["1.5 m"], ratio=1.5)
    assert answer.consistent is True
    assert "disagree" not in answer.answer


def test_disagreement_above_the_ratio_is_reported() -> None:
    answer, _ = ask(["1 m"], ["2 m"], ratio=1.5)
    assert answer.consistent is False
    assert answer.gap_width_m == pytest.approx(1.5)
    assert answer.fits is True  # decided on the mean; the flag is what tells the planner to doubt
    assert answer.answer.endswith("; the two object orders disagree (about a metre vs about 2 m).")
    answer, _ = ask(["1 m"], ["2 m"], ratio=2.5)
    assert answer.consistent is True


def test_zero_against_a_number_is_inconsistent_and_two_zeros_agree() -> None:
    assert ask(["0 cm"], ["50 cm"])[0].consistent is False
    zeros = ask(["0 m"], ["0 cm"])[0]
    assert (zeros.consistent, zeros.gap_width_m, zeros.fits) == (True, 0.0, False)


def test_ratio_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_disagreement_ratio"):
        ask(["1 m"], ["1 m"], ratio=0.9)


def test_exactly_at_the_margin_through_the_chain() -> None:
    # "70 cm" reads as 0.7000000000000001 and 0.6 + 0.1 margin: it fits, clearance shown as 0.1.
    answer, _ = ask(["70 cm"], ["70 cm"])
    assert (answer.clearance_m, answer.fits) == (0.1, True)


def test_steps_keep_questions_raw_answers_and_values() -> None:
    answer, _ = ask(["about 1.2 m"], ["nope", "180 cm"])
    first, second = answer.steps
    assert first["order"] == "a_then_b" and second["order"] == "b_then_a"
    assert first["question"].startswith("How wide is the gap between the sofa and the table?")
    assert second["raw_answers"] == ["nope", "180 cm"]
    assert second["values_m"] == [None, pytest.approx(1.8)]
    assert second["value_m"] == pytest.approx(1.8)


def test_estimator_returning_the_wrong_count_is_an_error() -> None:
    class Short(ScriptedModelStandIn):
        def estimate(self, items: Sequence[tuple[Frame, SpatialQuery]]) -> list[Estimate]:
            return super().estimate(items)[:1]

    model = Short({("the sofa", "the table"): ["1 m"], ("the table", "the sofa"): ["1 m"]})
    with pytest.raises(RuntimeError, match="returned 1 estimates for 2 queries"):
        answer_gap(model, FRAME, QUERY)


def test_nan_or_negative_estimates_are_no_number() -> None:
    forward, backward = gap_queries(QUERY)
    answer = gap_answer_from_estimates(QUERY, [
        Estimate(forward, math.nan, ["?"], [math.nan]),
        Estimate(backward, -1.0, ["-1 m"], [-1.0]),
    ])  # fmt: skip
    assert answer.gap_width_m is None and answer.fits is None
    data = answer.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["steps"][0]["values_m"] == [None]


# ------------------------------------------------------------------------------------------------
# The sentence and the JSON


WIDE = GapQuery("s", "the sofa", "the table", 0.6, 0.1)
MARGIN = GapQuery("s", "the sofa", "the table", 0.6, 0.15)


@pytest.mark.parametrize(
    ("query", "gap_answer", "sentence"),
    [
        (WIDE, "1.5 m", "Yes: the gap is roughly 1.5 m, 90 cm wider than the robot."),
        (WIDE, "50 cm", "No: the gap is about half a metre, 10 cm narrower than the robot."),
        (MARGIN, "70 cm",
         "No: the gap is about 70 cm, only 10 cm wider than the robot; the safety margin is "
         "15 cm."),
        (GapQuery("s", "the sofa", "the table", 0.6, 0.0), "60 cm",
         "Yes: the gap is about 60 cm, just as wide as the robot."),
        (WIDE, "60 cm",
         "No: the gap is about 60 cm, just as wide as the robot; the safety margin is 10 cm."),
        (WIDE, "3 m", "Yes: the gap is about 3 m, 2.4 m wider than the robot."),
        (WIDE, "I can't see a table.",
         "Unknown: could not measure the gap between the sofa and the table (neither object "
         "order gave a gap width: no distance in the model's answer: \"I can't see a table.\")."),
    ],
)  # fmt: skip
def test_sentence(query: GapQuery, gap_answer: str, sentence: str) -> None:
    answer, _ = ask([gap_answer], [gap_answer], query=query)
    assert answer.answer == sentence


def test_sentence_is_one_line_whatever_the_model_wrote() -> None:
    answer, _ = ask(["no\nidea\r\nat all"], ["none\tat all"])
    assert "\n" not in answer.answer and "\r" not in answer.answer and "\t" not in answer.answer


ANSWER_KEYS = {
    "id", "question", "object_a", "object_b", "gap_width_m", "robot_width_m", "safety_margin_m",
    "clearance_m", "fits", "consistent", "answer", "steps", "reason",
}  # fmt: skip


@pytest.mark.parametrize(
    ("forward", "backward"), [(["1.2 m"], ["1.8 m"]), (["?"], ["1.5 m"]), (["?"], ["?"])]
)
def test_to_dict_is_the_answer_schema_and_strict_json(
    forward: list[str], backward: list[str]
) -> None:
    answer, _ = ask(forward, backward)
    data = answer.to_dict()
    assert set(data) == ANSWER_KEYS
    assert not {"stamp", "frame_id", "latency_ms"} & set(data)  # the node adds these
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["id"] == "g1" and data["question"] == "Can a 60 cm robot pass?"
    assert (data["object_a"], data["object_b"]) == ("the sofa", "the table")
    assert (data["robot_width_m"], data["safety_margin_m"]) == (0.6, 0.1)


def test_to_dict_replaces_nan_with_null() -> None:
    answer = GapAnswer("x", "q", "A", "B", math.nan, 0.6, 0.1, math.nan, None, None, "Unknown.",
                       [{"value_m": math.inf, "values_m": [math.nan, 1.0]}])  # fmt: skip
    data = answer.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["gap_width_m"] is None and data["clearance_m"] is None
    assert data["steps"] == [{"value_m": None, "values_m": [None, 1.0]}]


def test_refusal_of_an_unreadable_request() -> None:
    data = GapAnswer.refusal(
        "missing field: object_b", request_id="m2", question="{...}"
    ).to_dict()
    json.dumps(data, allow_nan=False)
    assert set(data) == ANSWER_KEYS
    assert (data["id"], data["fits"], data["gap_width_m"]) == ("m2", None, None)
    assert data["answer"] == "Unknown: could not read the question (missing field: object_b)."
    assert data["reason"] == "missing field: object_b"


def test_refusal_of_a_readable_query() -> None:
    data = GapAnswer.refusal("no camera frame yet", query=QUERY).to_dict()
    assert (data["id"], data["object_a"], data["robot_width_m"], data["fits"]) == (
        "g1",
        "the sofa",
        0.6,
        None,
    )
    assert data["answer"] == (
        "Unknown: could not measure the gap between the sofa and the table (no camera frame yet)."
    )


def test_from_question_to_json_answer() -> None:
    query = parse_gap_request(
        '{"id": "e2e", "question": "Will a robot 0.8 m across fit through the gap between the sofa '
        'and the coffee table?"}'
    )
    answer, model = ask(["About 1.1 m."], ["<answer>1.3 m</answer>"], query=query)
    data = json.loads(json.dumps(answer.to_dict(), allow_nan=False))
    assert data["id"] == "e2e"
    assert data["gap_width_m"] == pytest.approx(1.2)
    assert data["clearance_m"] == pytest.approx(0.4)
    assert data["fits"] is True
    assert data["answer"] == "Yes: the gap is roughly 1.2 m, 40 cm wider than the robot."
    assert len(model.calls) == 1


def test_unusable_estimate_values_are_explained() -> None:
    forward, backward = gap_queries(QUERY)
    answer = gap_answer_from_estimates(
        QUERY, [Estimate(forward, -1.0, ["-1 m"]), Estimate(backward, 10**400, ["huge"])]
    )
    assert answer.gap_width_m is None
    assert answer.steps[0]["reason"] == "not a usable length: -1.0"
    assert answer.steps[1]["reason"].startswith("not a usable length")
    assert answer.reason is not None and "not a usable length: -1.0" in answer.reason
