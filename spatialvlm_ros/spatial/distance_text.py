"""Read distances from free-text VLM answers; write them as SpatialVLM's answers do."""

# Why no units library (pint, quantities): the hard part here is not unit
# arithmetic but reading what VLMs actually write -- "half a metre",
# "one and a half feet", "5'6\"", "2-3 ft", "12 in away" vs. "in the box",
# decimal commas, hedges and reasoning around the answer.  pint parses none of
# these phrasings, its import costs about a second, and the unit table needed
# here has ten rows.  A small tokenizer plus a recursive-descent reader over the
# tokens is shorter than the glue a units library would need and keeps this
# module stdlib-only.

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["format_distance", "parse_distance"]

_INCH = 0.0254
_FOOT = 0.3048

# metres per unit, abbreviations, spelled-out names.  Only spelled-out names may
# follow "a"/"an" ("a metre" is 1 m, but "a m" or "a in" is not a distance).
_UNIT_TABLE: tuple[tuple[float, tuple[str, ...], tuple[str, ...]], ...] = (
    (1.0, ("m",), ("meter", "meters", "metre", "metres")),
    (0.01, ("cm", "cms"), ("centimeter", "centimeters", "centimetre", "centimetres")),
    (0.001, ("mm",), ("millimeter", "millimeters", "millimetre", "millimetres")),
    (1000.0, ("km", "kms"), ("kilometer", "kilometers", "kilometre", "kilometres")),
    (_INCH, ("in",), ("inch", "inches")),
    (_FOOT, ("ft",), ("foot", "feet")),
    (0.9144, ("yd", "yds"), ("yard", "yards")),
    (1609.344, ("mi",), ("mile", "miles")),
)
_UNIT_WORDS: dict[str, float] = {
    name: metres
    for metres, abbrevs, spelled in _UNIT_TABLE
    for name in abbrevs + spelled
}
_SPELLED_UNITS = frozenset(name for _, _, spelled in _UNIT_TABLE for name in spelled)
# Imperial abbreviations are often written with a period ("5 ft. 6 in."); skipping
# it keeps such a compound together.  Metric symbols take no period.
_DOTTED_ABBREVS = frozenset({"in", "ft", "yd", "yds", "mi"})
# '"' and "'" count as inches/feet only when glued to a digit ("5'6\"").
_UNIT_SYMBOLS = {"'": _FOOT, '"': _INCH}

_ONES = {
    word: value
    for value, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
    )
}  # fmt: skip
_TENS = {
    word: 10 * value
    for value, word in enumerate(
        ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"),
        2,
    )
}  # fmt: skip
_DENOMINATORS = {
    "half": 2, "halves": 2, "third": 3, "thirds": 3,
    "quarter": 4, "quarters": 4, "fourth": 4, "fourths": 4,
}  # fmt: skip
# After a number, "in" is the preposition, not inches, when one of these follows
# ("2 in the box", "3 in total"); a following number ("5 in 10") also rules it out.
_IN_PREPOSITION_FOLLOWERS = frozenset(
    {
        "the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her",
        "its", "our", "their", "each", "every", "all", "both", "some", "any", "which",
        "what", "front", "total", "between", "order", "place", "view", "frame", "image",
        "picture", "scene", "length", "width", "height", "depth", "diameter", "size",
        "radius",
        *_ONES, *_TENS,
    }
)  # fmt: skip
# Range separators; "and" is one only after "between" ("between 1 and 2 m").
_RANGE_WORDS = frozenset({"to", "or"})

_TOKEN_RE = re.compile(
    r"""
      (?P<frac>[0-9]+\s*/\s*[0-9]+)(?![0-9/])
    | (?P<num>
          (?:(?<![\w.\-])-)?          # a minus, unless glued to a word/number ("2-3")
          (?: (?P<thousands>[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?)  # 1,000
            | [0-9]+(?:[.,][0-9]+)?   # 1.5 / 0,5 (decimal comma)
            | \.[0-9]+ )              # .5
          (?:e[-+]?[0-9]+)?           # 1e-2
          (?![0-9])
      )
    | (?P<word>[a-z]+(?:'[a-z]+)*)    # keeps "it's" / "can't" whole, so "'" is not feet
    | (?P<sym>['"])
    | (?P<dash>[-\u2013~])
    | (?P<punct>[,;:.!?()\[\]{}])
    """,
    re.VERBOSE,
)

_CHAR_MAP = str.maketrans(
    {
        "\u2212": "-", "\u2010": "-", "\u2011": "-",   # minus sign, hyphens
        "\u2012": "\u2013", "\u2014": "\u2013", "\u2015": "\u2013",  # dashes: no minus
        "\u2018": "'", "\u2019": "'", "\u2032": "'",  # curly apostrophe, prime
        "\u201c": '"', "\u201d": '"', "\u2033": '"',  # curly quotes, double prime
        "\u00bd": " 1/2", "\u00bc": " 1/4", "\u00be": " 3/4",
        "\u2153": " 1/3", "\u2154": " 2/3",
        "\u2248": " ", "\uff5e": "~",
    }
)  # fmt: skip

_ANSWER_OPEN_RE = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE_RE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class _Token:
    kind: str  # frac | num | word | sym | dash | punct
    text: str
    start: int
    end: int
    value: float = 0.0
    quoted: bool = False  # a number right after an opening quote: '"2"' is not 2 inches


def _answer_span(text: str) -> str:
    """The content of the last <answer> tag (to its close or the end), else the text."""
    opens = list(_ANSWER_OPEN_RE.finditer(text))
    if not opens:
        return text
    rest = text[opens[-1].end() :]
    close = _ANSWER_CLOSE_RE.search(rest)
    return rest[: close.start()] if close else rest  # unclosed: a truncated generation


def _tokenize(text: str) -> list[_Token]:
    text = text.lower().translate(_CHAR_MAP).replace("''", '"')
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup or ""  # the outermost group: "num" also for thousands
        raw = match.group()
        start, end = match.start(), match.end()
        if kind == "frac":
            numerator, denominator = (float(part) for part in raw.split("/"))
            if denominator == 0:
                kind, value = "punct", 0.0  # "1/0": not a number, and it breaks phrases
            else:
                value = numerator / denominator
            tokens.append(_Token(kind, raw, start, end, value))
        elif kind == "num":
            digits = (
                raw.replace(",", "")
                if match.group("thousands")
                else raw.replace(",", ".")
            )
            # '"2"' is a quoted number; in "5'6\"" the quote before 6 is a feet mark.
            quoted = (
                start > 0
                and text[start - 1] in "'\""
                and not (start > 1 and text[start - 2].isdigit())
            )
            tokens.append(_Token("num", raw, start, end, float(digits), quoted))
        else:
            tokens.append(_Token(kind, raw, start, end))
    return tokens


class _Reader:
    """Recursive-descent reader of amounts, units, compounds and ranges over tokens.

    The reading methods take a token index and return what they read plus the
    index after it, or None when no such phrase starts there.
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens

    def tok(self, i: int) -> _Token | None:
        return self.tokens[i] if 0 <= i < len(self.tokens) else None

    def word(self, i: int) -> str | None:
        t = self.tok(i)
        return t.text if t is not None and t.kind == "word" else None

    def glued_dash(self, i: int) -> bool:
        """A '-' touching both neighbours, as in "twenty-five" or "5-metre"."""
        t, before, after = self.tok(i), self.tok(i - 1), self.tok(i + 1)
        return (
            t is not None and t.kind == "dash" and t.text == "-"
            and before is not None and before.end == t.start
            and after is not None and after.start == t.end
        )  # fmt: skip

    # -- numbers -------------------------------------------------------------

    def cardinal_part(self, i: int) -> tuple[float, int] | None:
        w = self.word(i)
        if w in _ONES:
            return _ONES[w], i + 1
        if w in _TENS:
            k = i + 2 if self.glued_dash(i + 1) else i + 1
            unit = self.word(k)
            if unit in _ONES and 0 < _ONES[unit] < 10:
                return _TENS[w] + _ONES[unit], k + 1
            return _TENS[w], i + 1
        return None

    def cardinal(self, i: int) -> tuple[float, int] | None:
        """Read "two", "twenty-five", "one hundred and fifty", "one point five"."""
        part = self.cardinal_part(i)
        if part is None:
            return None
        value, j = part
        if self.word(j) == "hundred":
            value, j = value * 100, j + 1
            rest = self.cardinal_part(j + 1 if self.word(j) == "and" else j)
            if rest is not None:
                value += rest[0]
                j = rest[1]
        if self.word(j) == "point" and _ONES.get(self.word(j + 1) or "", 10) < 10:
            decimals, j = "", j + 1
            while _ONES.get(self.word(j) or "", 10) < 10:
                decimals, j = decimals + str(_ONES[self.word(j) or ""]), j + 1
            value += float("0." + decimals)
        return value, j

    def fraction_words(self, i: int, with_of: bool = True) -> tuple[float, int] | None:
        """Read "half", "a quarter", "three quarters", with an optional "of a" tail."""
        j, numerator = i, 1.0
        if self.word(j) in ("a", "an"):
            j += 1
        elif (card := self.cardinal(j)) is not None:
            numerator, j = card
        if self.glued_dash(j) and self.word(j + 1) in _DENOMINATORS:
            j += 1  # "three-quarters"
        denominator = _DENOMINATORS.get(self.word(j) or "")
        if denominator is None:
            return None
        j += 1
        if with_of:  # "half a metre", "a quarter of a metre"
            if self.word(j) == "of":
                j += 1
            if self.word(j) in ("a", "an"):
                j += 1
        return numerator / denominator, j

    def and_fraction(self, i: int) -> tuple[float, int] | None:
        """The "and a half" of "one and a half" / "a metre and a half"."""
        if self.word(i) != "and":
            return None
        t = self.tok(i + 1)
        if t is not None and t.kind == "frac":
            return t.value, i + 2
        frac = self.fraction_words(i + 1, with_of=False)
        return frac if frac is not None and frac[0] < 1 else None

    def amount(self, i: int) -> tuple[float, int, bool] | None:
        """A number in digits or words -> (value, next index, written in digits)."""
        t = self.tok(i)
        if t is None:
            return None
        digits = t.kind in ("num", "frac")
        if t.kind == "num":
            value, j = t.value, i + 1
            nxt = self.tok(j)
            if (
                nxt is not None
                and nxt.kind == "frac"
                and value >= 0
                and value.is_integer()
            ):
                value, j = value + nxt.value, j + 1  # "1 1/2"
        elif t.kind == "frac":
            value, j = t.value, i + 1
        else:
            words = self.fraction_words(i) or self.cardinal(i) or self.indefinite(i)
            if words is None:
                return None
            value, j = words
        frac = self.and_fraction(j)
        if frac is not None:
            value, j = value + frac[0], frac[1]
        return value, j, digits

    def indefinite(self, i: int) -> tuple[float, int] | None:
        """Read the 1 of "a metre", the 2 of "a couple of feet"; a lone "a" is none."""
        if self.word(i) not in ("a", "an"):
            return None
        if self.word(i + 1) in _SPELLED_UNITS:
            return 1.0, i + 1
        if self.word(i + 1) == "couple":
            return 2.0, i + 3 if self.word(i + 2) == "of" else i + 2
        return None

    # -- units and measurements ----------------------------------------------

    def unit(self, i: int, digits: bool, quoted: bool) -> tuple[float, int] | None:
        """The unit right after an amount that ends at token i - 1."""
        t, prev = self.tok(i), self.tok(i - 1)
        if t is None or prev is None:
            return None
        if (
            self.glued_dash(i)
            and self.word(i + 1) in _UNIT_WORDS
            and self.word(i + 1) != "in"
        ):
            i, t = i + 1, self.tokens[i + 1]  # "5-metre"
        if t.kind == "word" and t.text in _UNIT_WORDS:
            if t.text == "in" and not self.in_means_inches(i + 1):
                return None
            j = i + 1
            nxt = self.tok(j)
            if t.text in _DOTTED_ABBREVS and nxt is not None and nxt.text == ".":
                j += 1
            return _UNIT_WORDS[t.text], j
        if t.kind == "sym" and digits and not quoted and prev.end == t.start:
            return _UNIT_SYMBOLS[t.text], i + 1
        return None

    def in_means_inches(self, i: int) -> bool:
        t = self.tok(i)
        if t is None or t.kind == "punct":
            return True
        if t.kind in ("num", "frac"):
            return False
        return not (t.kind == "word" and t.text in _IN_PREPOSITION_FOLLOWERS)

    def with_unit(
        self, i: int, amount: tuple[float, int, bool], between: bool
    ) -> tuple[float, int, float] | None:
        """Amount, unit, then "and a half" or smaller parts ("5 ft 6 in", "1 m 20 cm").

        Returns (metres, next index, metres per unit of the first part).
        """
        value, j, digits = amount
        start = self.tok(i)
        unit = self.unit(j, digits, start is not None and start.quoted)
        if unit is None:
            return None
        factor, j = unit
        first_factor, metres = factor, value * factor
        frac = self.and_fraction(j)
        if frac is not None:  # "a metre and a half"
            return metres + frac[0] * factor, frac[1], first_factor
        while True:
            # In "between 1 m and 2 m" the "and" separates a range, not parts.
            k = j + 1 if self.word(j) == "and" and not between else j
            part = self.amount(k)
            if part is None or part[0] < 0:
                break
            smaller = self.unit(part[1], part[2], False)
            if smaller is None:
                if self.bare_inches_after_feet(j, factor, part):
                    metres, j = metres + part[0] * _INCH, part[1]
                break
            if smaller[0] >= factor:
                break
            metres += part[0] * smaller[0]
            factor, j = smaller
        return metres, j, first_factor

    def bare_inches_after_feet(
        self, j: int, factor: float, part: tuple[float, int, bool]
    ) -> bool:
        """In "5'6" and "6 foot 2" the unitless number is inches.

        After the ' mark that is unambiguous; after a spelled "ft"/"feet" only a
        number below 12 closing the phrase counts ("6 feet 2 cups" is not 6'2").
        """
        if factor != _FOOT:
            return False
        mark = self.tok(j - 1)
        if mark is not None and mark.text == "'":
            return part[2]
        after = self.tok(part[1])
        return 0 <= part[0] < 12 and (after is None or after.kind == "punct")

    def measurement(self, i: int) -> tuple[float, int] | None:
        """One stated distance (signed metres) at token i: single, compound or range."""
        sign = 1.0
        if self.word(i) in ("minus", "negative"):
            sign, i = -1.0, i + 1
        between = self.word(i) == "between"
        if between or self.word(i) == "from":
            i += 1
        first = self.amount(i)
        if first is None:
            return None
        if first[0] < 0:  # "-2-3 m" is negative as a whole, not the range (-2, 3)
            sign, first = -sign, (-first[0], first[1], first[2])
        single = self.with_unit(i, first, between)
        if single is not None:
            metres, j, _ = single
            second = self.range_end(j, between, first_has_unit=True)
            if second is not None:
                metres, j = (metres + second[0]) / 2, second[1]
            return sign * metres, j
        # A unitless number is a distance only as the start of a range ("2-3 feet").
        second = self.range_end(first[1], between, first_has_unit=False)
        if second is None:
            return None
        second_metres, j, factor = second
        return sign * (first[0] * factor + second_metres) / 2, j

    def range_end(
        self, i: int, between: bool, first_has_unit: bool
    ) -> tuple[float, int, float] | None:
        """Upper end of a range after its separator -> (metres, next index, unit)."""
        t = self.tok(i)
        if t is None:
            return None
        if t.kind == "num" and t.text.startswith("-") and not first_has_unit:
            # "2 -3 m": the minus glued to 3 is really the range dash
            amount = self.amount(i)
            if amount is None:
                return None
            value, j, digits = amount
            return self.with_unit(i, (-value, j, digits), between)
        if t.kind == "word":
            if t.text == "or" and first_has_unit:
                return None  # "0.5 m or 50 cm" restates a distance; the last one wins
            if t.text not in _RANGE_WORDS and not (between and t.text == "and"):
                return None
        elif t.kind != "dash":
            return None
        amount = self.amount(i + 1)
        if amount is None or amount[0] < 0:
            return None
        return self.with_unit(i + 1, amount, between)


def parse_distance(text: str) -> float | None:
    """The distance in metres that a free-text VLM answer states, or None.

    Reads units (m, cm, mm, km, in, ft, yd, mi, ' and "), hedges, number words and
    fractions ("half a metre", "one and a half feet", "1 1/2 ft"), compound lengths
    ("5 ft 6 in", "1 m 20 cm", 5'6"), and ranges ("2-3 feet", "between 1 and 2 m",
    which give the midpoint).  If the text has <answer> tags only the last one is
    read; otherwise the last distance stated in the text wins, so reasoning before
    the final answer is ignored.

    Rules for ambiguous input:

    * A bare number with no unit ("0.4") is None: the unit is never guessed.
    * A comma between digits is a decimal mark ("0,5 m", "1,25 m"), except that
      groups of exactly three digits after a non-zero lead are thousands
      ("1,000 mm" is 1 m, "1,500 m" is 1.5 km); "1, 2 m" is a list (2 m).  A point
      is always a decimal mark.
    * "in" after a number is inches unless an article, pronoun, number or the
      like follows ("12 in away" is inches, "2 in the box" is not).
    * Negative, infinite or absent distances, refusals and non-str input give None.
    """
    if not isinstance(text, str):
        return None
    tokens = _tokenize(_answer_span(text))
    reader = _Reader(tokens)
    last, i = None, 0
    while i < len(tokens):
        found = reader.measurement(i)
        if found is None:
            i += 1
        else:
            last, i = found
    if last is None or last < 0 or not math.isfinite(last):
        return None
    return last


def _human_step(metres: float) -> Decimal:
    """The largest 1·10^k or 5·10^k step not above 20% of the distance.

    Rounding to it is off by at most 10%, and it gives the steps people use:
    1 cm below 25 cm, 5 cm to 50 cm, 10 cm to 2.5 m, 0.5 m to 5 m, 1 m to 25 m,
    5 m to 50 m, and so on.
    """
    budget = 0.2 * metres
    exponent = math.floor(math.log10(budget))
    mantissa = 5 if budget >= 5 * 10.0**exponent else 1
    return Decimal(mantissa).scaleb(exponent)


def format_distance(metres: float) -> str:
    """A distance as SpatialVLM-style answer text: "about 20 cm", "roughly 1.5 m".

    Deterministic.  The value is rounded to a human step (see ``_human_step``:
    within 10%), then written in mm below 1 cm, cm below 1 m, m below 1 km and km
    above, in British spelling ("about half a metre", "about a metre").  The hedge
    is "roughly" when a decimal is shown and "about" otherwise.  Exactly 0 gives
    "0 cm"; below half a millimetre gives "less than 1 mm".
    ``parse_distance(format_distance(x))`` is within 10% of x.

    Raises:
        TypeError: ``metres`` is not a real number.
        ValueError: ``metres`` is negative, NaN or infinite.
    """
    if isinstance(metres, bool) or not isinstance(metres, numbers.Real):
        raise TypeError(
            f"distance must be a real number of metres, got {type(metres).__name__}"
        )
    x = float(metres)
    if not math.isfinite(x):
        raise ValueError(f"distance must be finite, got {x!r}")
    if x < 0:
        raise ValueError(f"distance must not be negative, got {x!r} m")
    if x == 0:
        return "0 cm"
    if x < 0.0005:
        return "less than 1 mm"
    step = _human_step(x)
    rounded = math.floor(x / float(step) + 0.5) * step
    if rounded == Decimal("0.5"):
        return "about half a metre"
    if rounded == 1:
        return "about a metre"
    if rounded < Decimal("0.01"):
        unit, scale = "mm", Decimal("0.001")
    elif rounded < 1:
        unit, scale = "cm", Decimal("0.01")
    elif rounded < 1000:
        unit, scale = "m", Decimal(1)
    else:
        unit, scale = "km", Decimal(1000)
    shown = format((rounded / scale).normalize(), "f")
    hedge = "roughly" if "." in shown else "about"
    return f"{hedge} {shown} {unit}"
