"""Tests for reading and writing distances in VLM answer text."""

import math

import numpy as np
import pytest

from spatialvlm_ros.spatial.distance_text import format_distance, parse_distance

IN = 0.0254
FT = 0.3048
YD = 0.9144

# (text, metres or None).  Grouped by the behaviour each block pins down.
CASES = [
    # plain numbers with units
    ("2 m", 2.0),
    ("1.5m", 1.5),
    ("150 cm", 1.5),
    ("15cm", 0.15),
    ("3 meters", 3.0),
    ("3 metres", 3.0),
    ("1 meter", 1.0),
    ("20 centimeters", 0.2),
    ("20 centimetres", 0.2),
    ("1 centimetre", 0.01),
    ("250 mm", 0.25),
    ("8 millimetres", 0.008),
    ("12 millimeters", 0.012),
    ("1.2 km", 1200.0),
    ("2 kilometres", 2000.0),
    ("1 kilometer", 1000.0),
    ("12 inches", 12 * IN),
    ("1 inch", IN),
    ("3 ft", 3 * FT),
    ("3 feet", 3 * FT),
    ("1 foot", FT),
    ("2 yd", 2 * YD),
    ("2 yards", 2 * YD),
    ("1 yard", YD),
    ('6"', 6 * IN),
    ("6'", 6 * FT),
    ("5'6\"", 5.5 * FT),
    ("5' 6\"", 5.5 * FT),
    ("5\u20196\u201d", 5.5 * FT),  # curly quotes
    ("5'6''", 5.5 * FT),  # two apostrophes for inches
    ("5'6", 5.5 * FT),
    (".5 m", 0.5),
    ("a 2-metre gap", 2.0),
    ("It is 2.5 M away.", 2.5),
    # hedges
    ("about 2 m", 2.0),
    ("roughly 30 cm", 0.3),
    ("~40 cm", 0.4),
    ("approximately 1.2 meters", 1.2),
    ("around 3 feet", 3 * FT),
    ("\u2248 0.7 m", 0.7),
    ("nearly 2 metres", 2.0),
    ("almost 1 m", 1.0),
    ("The distance is approximately 1.25 meters.", 1.25),
    ("**Answer:** about 80 cm", 0.8),
    # number words and fractions
    ("two meters", 2.0),
    ("half a meter", 0.5),
    ("about half a metre", 0.5),
    ("one and a half metres", 1.5),
    ("a quarter of a meter", 0.25),
    ("three quarters of a metre", 0.75),
    ("three-quarters of a metre", 0.75),
    ("twenty-five centimeters", 0.25),
    ("twenty five centimetres", 0.25),
    ("a meter", 1.0),
    ("about a metre", 1.0),
    ("a foot", FT),
    ("an inch", IN),
    ("a metre and a half", 1.5),
    ("a foot and a half", 1.5 * FT),
    ("two and a half feet", 2.5 * FT),
    ("one hundred and fifty centimetres", 1.5),
    ("a couple of metres", 2.0),
    ("a third of a metre", 1 / 3),
    ("1/2 m", 0.5),
    ("1 1/2 feet", 1.5 * FT),
    ("1\u00bd m", 1.5),
    ("1 and a half meters", 1.5),
    ("one point five metres", 1.5),
    ("six feet two", 74 * IN),
    ("1e-2 m", 0.01),
    ("zero meters", 0.0),
    # mixed units
    ("5 feet 6 inches", 5.5 * FT),
    ("5 ft 6 in", 5.5 * FT),
    ("5 ft. 6 in.", 5.5 * FT),
    ("1 m 20 cm", 1.2),
    ("5 feet and 6 inches", 5.5 * FT),
    ("1 meter 5 centimeters", 1.05),
    ("2 ft 3 in away", 27 * IN),
    # ranges give the midpoint
    ("2-3 feet", 2.5 * FT),
    ("2 to 3 m", 2.5),
    ("between 1 and 2 m", 1.5),
    ("1.5\u20132 meters", 1.75),
    ("1.5 \u2014 2 meters", 1.75),
    ("2 m to 3 m", 2.5),
    ("between 50 cm and 1 m", 0.75),
    ("from 2 to 4 metres", 3.0),
    ("two to three metres", 2.5),
    ("between one and two metres", 1.5),
    ("10-20cm", 0.15),
    ("2 or 3 feet", 2.5 * FT),
    ("2~3 m", 2.5),
    ("roughly 0.5 m or 50 cm", 0.5),  # a restatement, not a range
    # decimal commas and thousands separators
    ("0,5 m", 0.5),
    ("1,25 metres", 1.25),
    ("1,000 mm", 1.0),
    ("12,5 cm", 0.125),
    ("1,500 m", 1500.0),
    ("0,500 m", 0.5),
    ("1, 2 m", 2.0),
    ("1.000 m", 1.0),
    # answers wrapped in reasoning: last <answer> tag, else the last distance
    ("<think>The table is 2 m long.</think><answer>about 0.5 m</answer>", 0.5),
    ("<answer>1 m</answer> wait, let me redo it. <answer>3 m</answer>", 3.0),
    ("<ANSWER> 40 cm </ANSWER> The shelf is 2 m tall.", 0.4),
    ("<answer>I cannot tell</answer> maybe 2 m", None),
    ("<think>the cup is 10 cm wide</think><answer>about 75 cm", 0.75),
    (
        (
            "The gripper is 30 cm above the table, "
            "so the distance to the bottle is about 0.5 m"
        ),
        0.5,
    ),
    ("The chair is 1 m from the wall and the table is 2.5 m from the chair.", 2.5),
    ("Estimating from the 30 cm tile size, the answer is: 1.2 m", 1.2),
    # "in" as a preposition, numbers that are not distances
    ("the bottle is in the box", None),
    ("2 objects in the scene", None),
    ("there are 2 in the box", None),
    ("5 in 10 cases", None),
    ("it is 12 in away", 12 * IN),
    ("12 in", 12 * IN),
    ("2 bottles", None),
    ("3 objects are 40 cm apart", 0.4),
    ("The 2nd bottle is 60 cm from the 3 cups", 0.6),
    ("It's about 2 m", 2.0),
    ("I can't say, it's 3 feet", 3 * FT),
    ('the answer is "2"', None),
    ('the label says "2" and it is 3 m away', 3.0),
    # bare numbers: no unit is invented
    ("0.4", None),
    ("The distance is 2.", None),
    ("about 3", None),
    # refusals and no distance
    ("I cannot determine the distance", None),
    ("", None),
    ("unknown", None),
    ("N/A", None),
    ("The objects are a metre-ish apart? Hard to say.", 1.0),  # "-ish" is a hedge
    ("Sorry, I can't estimate that from the image.", None),
    ("a few metres", None),
    ("in front of the table", None),
    # negative distances
    ("-2 m", None),
    ("\u22120.5 m", None),
    ("minus 3 metres", None),
    ("-2-3 m", None),
    ("2 -3 m", 2.5),  # a sloppy range, not a negative distance
    ("the x offset is -0.2 m, so the distance is 0.5 m", 0.5),
    ("the distance is 0.5 m, offset -0.2 m", None),
    ("COVID-19 m", 19.0),  # a hyphen glued to a word is not a minus sign
]


@pytest.mark.parametrize(
    ("text", "expected"), CASES, ids=[repr(t)[:60] for t, _ in CASES]
)
def test_parse_distance(text, expected):
    got = parse_distance(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_case_table_is_large_and_unique():
    texts = [text for text, _ in CASES]
    assert len(texts) >= 80
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("value", [None, 2, 2.0, b"2 m", ["2 m"], object()])
def test_parse_distance_non_str_is_none(value):
    assert parse_distance(value) is None


def test_parse_distance_huge_number_is_none():
    assert parse_distance("9" * 400 + " m") is None


@pytest.mark.parametrize(
    ("metres", "text"),
    [
        (0.0, "0 cm"),
        (0.0001, "less than 1 mm"),
        (0.006, "about 6 mm"),
        (0.012, "roughly 1.2 cm"),
        (0.02, "about 2 cm"),
        (0.035, "roughly 3.5 cm"),
        (0.2, "about 20 cm"),
        (0.33, "about 35 cm"),
        (0.49, "about half a metre"),
        (0.5, "about half a metre"),
        (0.73, "about 70 cm"),
        (1.0, "about a metre"),
        (1.5, "roughly 1.5 m"),
        (3.2, "about 3 m"),
        (3.3, "roughly 3.5 m"),
        (12.0, "about 12 m"),
        (37.0, "about 35 m"),
        (130.0, "about 130 m"),
        (1234.0, "roughly 1.2 km"),
    ],
)
def test_format_distance_examples(metres, text):
    assert format_distance(metres) == text


def test_format_distance_round_trips_within_15_percent():
    for x in np.geomspace(0.01, 50.0, 2000):
        text = format_distance(float(x))
        back = parse_distance(text)
        assert back is not None, text
        assert abs(back - x) <= 0.15 * x, (x, text, back)


def test_format_distance_is_deterministic():
    grid = [float(x) for x in np.geomspace(0.001, 5000.0, 300)]
    assert [format_distance(x) for x in grid] == [format_distance(x) for x in grid]


def test_format_distance_accepts_ints_and_numpy():
    assert (
        format_distance(2) == format_distance(2.0) == format_distance(np.float32(2.0))
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.1, -1e-9])
def test_format_distance_rejects_non_finite_and_negative(bad):
    with pytest.raises(ValueError, match="distance must"):
        format_distance(bad)


@pytest.mark.parametrize("bad", ["2", None, True])
def test_format_distance_rejects_non_numbers(bad):
    with pytest.raises(TypeError):
        format_distance(bad)
