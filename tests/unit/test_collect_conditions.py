"""The condition language: parsing (precedence, errors with columns, no code execution) and evaluation."""

from __future__ import annotations

import pytest

from firmware_agent.collect.conditions import (
    ConditionError,
    Evaluator,
    RollingWindow,
    parse_condition,
    tokenize,
)
from firmware_agent.collect.names import SignalNames
from firmware_agent.values import Sample


def evaluate(text: str, values: dict[str, object], timestamp: float = 0.0) -> bool:
    """Feed one sample per signal (in order, all at `timestamp`) and return the last result."""
    evaluator = Evaluator(parse_condition(text))
    result = False
    for name, value in values.items():
        result = evaluator.update(Sample(timestamp, name, value))  # type: ignore[arg-type]
    return result


def error_of(text: str) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    return caught.value


# -- parsing ---------------------------------------------------------------------------------------------


def test_tokens_carry_one_based_columns() -> None:
    tokens = tokenize("Vehicle.Speed >= 1.5e1")
    assert [(t.kind, t.text, t.column) for t in tokens] == [
        ("name", "Vehicle.Speed", 1),
        ("op", ">=", 15),
        ("number", "1.5e1", 18),
        ("end", "", 23),
    ]


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        # * binds tighter than +, unary minus tighter than *
        ("a + b * c == 7", {"a": 1, "b": 2, "c": 3}, True),
        ("(a + b) * c == 9", {"a": 1, "b": 2, "c": 3}, True),
        ("-a * 2 == -4", {"a": 2}, True),
        ("a - b - c == -4", {"a": 1, "b": 2, "c": 3}, True),  # left-associative
        ("a / b / c == 1", {"a": 8, "b": 4, "c": 2}, True),
        # and binds tighter than or; not tighter than and
        ("a > 0 or b > 0 and c > 0", {"a": 1, "b": 0, "c": 0}, True),
        ("(a > 0 or b > 0) and c > 0", {"a": 1, "b": 0, "c": 0}, False),
        ("not a > 0 and b > 0", {"a": 0, "b": 1}, True),
        ("not (a > 0 and b > 0)", {"a": 1, "b": 1}, False),
        ("abs(a - b) >= 3", {"a": 1, "b": 4}, True),
    ],
)
def test_precedence_and_associativity(text: str, values: dict[str, object], expected: bool) -> None:
    assert evaluate(text, values) is expected


def test_constant_arithmetic_is_folded() -> None:
    root = parse_condition("a > 2 * 40 + -1").root
    assert root.right.value == 79.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Vehicle.Speed > 80)", "unexpected ')' at column 19"),
        ("(Vehicle.Speed > 80", "unexpected end of condition (expected ')') at column 20"),
        ("Vehicle.Speed >", "unexpected end of condition at column 16"),
        ("Vehicle.Speed > > 3", "unexpected '>' at column 17"),
        ("a = 3", "unexpected character '=' (use '==') at column 3"),
        ("a > 1 && b > 2", "unexpected character '&' (use 'and') at column 7"),
        ("a == 'D", "unterminated string at column 6"),
        ("a > 1 < 2", "comparisons do not chain (use 'and') at column 7"),
        ("a + 1", "a condition must be true or false, e.g. 'NAME > 80' at column 1"),
        ("a", "a condition must be true or false, e.g. 'NAME > 80' at column 1"),
        ("a > 1 and b", "'and' needs a comparison on its right at column 11"),
        ("not a", "'not' needs a comparison at column 5"),
        ("(a > 1) + 2 > 0", "'+' needs a number, not a condition at column 2"),
        ("a == 'D' + 1", "'+' needs a number, not a name at column 6"),
        ("'D' < a", "a name compares only with '==' or '!=', not '<' at column 1"),
        ("a == 'D' == b", "comparisons do not chain (use 'and') at column 10"),
        ("(a > 1) == (b > 1)", "'==' compares values, not conditions at column 2"),
        ("3 == 'D'", "a number never equals a name at column 3"),
        ("a > 1 / 0", "division by zero at column 7"),
        ("max(a) > 1", "unexpected ')' (expected ',') at column 6"),
        ("max(a, b) > 1", "unexpected 'b' (expected a window length in seconds) at column 8"),
        ("max(a + 1, 2) > 1", "unexpected '+' (expected ',') at column 7"),
        ("max(a, 0) > 1", "window must be > 0 and <= 3600 seconds at column 8"),
        ("avg(a, 4000) > 1", "window must be > 0 and <= 3600 seconds at column 8"),
        ("sqrt(a) > 1", "unknown function 'sqrt' (known: min, max, avg, abs, changed) at column 1"),
        ("", "empty condition at column 1"),
    ],
)
def test_errors_name_the_column(text: str, message: str) -> None:
    assert str(error_of(text)) == message


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch /tmp/pwned') == 0",
        "eval('1') == 1",
        "[x for x in ()] == 1",
        "lambda: 1",
        "a if b else c",
        "a ** 2 > 1",
        "a[0] > 1",
        "a; b",
    ],
)
def test_python_syntax_is_not_accepted(text: str) -> None:
    # Only the grammar's constructs exist: anything Python-only is a parse error, nothing runs.
    with pytest.raises(ConditionError):
        parse_condition(text)


def test_dunder_names_are_just_unknown_signals_when_names_are_checked() -> None:
    names = SignalNames(frozenset({"Vehicle.Speed"}))
    with pytest.raises(ConditionError, match=r"unknown signal 'a.__class__' at column 1"):
        parse_condition("a.__class__ == 1", names)


def test_signal_names_resolve_to_sample_names_with_suggestions() -> None:
    names = SignalNames(
        frozenset({"Vehicle.Chassis.Brake.PedalPosition", "BRAKE_STATUS.MasterCylPressure"}),
        {"BRAKE_STATUS.BrakePedalPos": "Vehicle.Chassis.Brake.PedalPosition"},
    )
    expression = parse_condition("BRAKE_STATUS.BrakePedalPos > 80", names)
    assert expression.signals == {"Vehicle.Chassis.Brake.PedalPosition"}
    error = str(error_of_with(names, "BRAKE_STATUS.MasterCylPresure > 3"))
    assert error == (
        "unknown signal 'BRAKE_STATUS.MasterCylPresure' "
        "(did you mean 'BRAKE_STATUS.MasterCylPressure'?) at column 1"
    )


def error_of_with(names: SignalNames, text: str) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text, names)
    return caught.value


def test_strings_compare_with_value_table_names() -> None:
    assert evaluate("gear == 'D'", {"gear": "D"}) is True
    assert evaluate('gear != "D"', {"gear": "R"}) is True
    assert evaluate("'it\\'s' == s", {"s": "it's"}) is True


def test_value_table_objects_from_cantools_compare_by_name() -> None:
    from cantools.database.namedsignalvalue import NamedSignalValue

    assert evaluate("gear == 'D'", {"gear": NamedSignalValue(3, "D")}) is True
    # Ordering a value-table name against a number has no value: false, not an exception.
    assert evaluate("gear > 2", {"gear": NamedSignalValue(3, "D")}) is False


# -- evaluation ------------------------------------------------------------------------------------------


def test_missing_value_and_division_by_zero_are_false_and_counted() -> None:
    evaluator = Evaluator(parse_condition("a / b > 1"))
    assert evaluator.update(Sample(0.0, "a", 5)) is False  # b not seen yet
    assert evaluator.update(Sample(0.1, "b", 0)) is False  # division by zero
    assert evaluator.update(Sample(0.2, "b", 2)) is True
    assert evaluator.undefined == 2


def test_not_of_an_undefined_comparison_is_still_false() -> None:
    # An undefined condition is false as a whole; `not` does not turn "unknown" into true.
    evaluator = Evaluator(parse_condition("not a > 1 and b == 0"))
    assert evaluator.update(Sample(0.0, "b", 0)) is False


def test_rolling_max_min_avg_over_a_time_window() -> None:
    evaluator = Evaluator(parse_condition("max(s, 2) - min(s, 2) > 10 and avg(s, 2) > 0"))
    stream = [(0.0, 5.0), (1.0, 20.0), (2.0, 10.0), (3.5, 11.0), (4.0, 12.0)]
    results = [evaluator.update(Sample(t, "s", v)) for t, v in stream]
    # t=1: window {5,20} -> 15 > 10; t=2: {5,20,10}; t=3.5: {10,11} (5 and 20 older than 2 s); t=4: {10,11,12}
    assert results == [False, True, True, False, False]


def test_rolling_windows_match_a_brute_force_reference() -> None:
    import random

    rng = random.Random(7)
    windows = {name: RollingWindow(name, 1.5, max_points=1000) for name in ("min", "max", "avg")}
    points: list[tuple[float, float]] = []
    t = 0.0
    for _ in range(2000):
        t += rng.uniform(0.0, 0.2)
        value = rng.uniform(-100, 100)
        points.append((t, value))
        for window in windows.values():
            window.push(t, value)
        inside = [v for (pt, v) in points if pt >= t - 1.5]
        assert windows["min"].value(t) == min(inside)
        assert windows["max"].value(t) == max(inside)
        assert windows["avg"].value(t) == pytest.approx(sum(inside) / len(inside))


def test_rolling_window_point_bound_drops_oldest_and_counts() -> None:
    window = RollingWindow("avg", 100.0, max_points=3)
    for t, value in enumerate([100.0, 1.0, 2.0, 3.0]):
        window.push(float(t), value)
    assert window.dropped == 1
    assert window.value(3.0) == pytest.approx(2.0)


def test_empty_window_is_false_not_zero() -> None:
    evaluator = Evaluator(parse_condition("max(s, 1) < 5 or t > 0"))
    assert evaluator.update(Sample(0.0, "s", 1.0)) is True
    # s's only point is now 10 s old: its window is empty, so max(...) < 5 is undefined (false).
    assert evaluator.update(Sample(10.0, "t", 0)) is False


def test_changed_is_true_only_on_the_changing_sample() -> None:
    evaluator = Evaluator(parse_condition("changed(gear)"))
    results = [
        evaluator.update(Sample(0.0, "gear", "P")),  # first value: nothing to compare with
        evaluator.update(Sample(0.1, "gear", "P")),
        evaluator.update(Sample(0.2, "gear", "D")),
        evaluator.update(Sample(0.3, "gear", "D")),
    ]
    assert results == [False, False, True, False]


def test_changed_of_another_signal_is_false() -> None:
    evaluator = Evaluator(parse_condition("changed(gear) or speed > 100"))
    evaluator.update(Sample(0.0, "gear", "P"))
    assert evaluator.update(Sample(0.1, "gear", "D")) is True
    assert evaluator.update(Sample(0.2, "speed", 10)) is False
