"""Trigger conditions: a small, safe expression language over signal values.

`parse_condition(text)` tokenizes and parses (recursive descent) a condition into a typed syntax tree,
never touching `eval`/`compile`: only the constructs of the grammar below exist, so no text can reach
Python's interpreter. `Evaluator(expression)` compiles that tree once into a tree of closures and keeps
the state a condition needs (latest value per signal, bounded rolling windows); `update(sample)` records
a sample and returns the condition's truth, cheaply enough to run on every relevant sample.

Grammar (EBNF; keywords are lower case)::

    condition  = or_expr ;                        (* must be true/false: a comparison, changed(), ... *)
    or_expr    = and_expr { "or" and_expr } ;
    and_expr   = not_expr { "and" not_expr } ;
    not_expr   = "not" not_expr | comparison ;
    comparison = sum [ ( "<" | "<=" | ">" | ">=" | "==" | "!=" ) sum ] ;
    sum        = product { ( "+" | "-" ) product } ;
    product    = unary { ( "*" | "/" ) unary } ;
    unary      = "-" unary | primary ;
    primary    = NUMBER | STRING | NAME | call | "(" or_expr ")" ;
    call       = ( "min" | "max" | "avg" ) "(" NAME "," NUMBER ")"   (* rolling, over NUMBER seconds *)
               | "abs" "(" sum ")"
               | "changed" "(" NAME ")" ;
    NAME       = IDENT { "." IDENT } ;                (* VSS path or MESSAGE.Signal *)
    NUMBER     = DIGITS [ "." DIGITS ] [ EXPONENT ] | "." DIGITS [ EXPONENT ] ;
    STRING     = '"' chars '"' | "'" chars "'" ;     (* a value-table name, e.g. "D" *)

A condition whose value cannot be computed (a signal not seen yet, an empty rolling window, a division by
zero, a number compared with a value-table name) is false: it never raises while evaluating.
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from firmware_agent.collect.names import SignalNames
from firmware_agent.values import Sample, SignalValue

#: The longest rolling window accepted, in seconds.
MAX_WINDOW_S = 3600.0
#: Nesting (parentheses, `not`, unary minus, `abs()`) and length limits of a condition. The parser and the
#: evaluator recurse over the syntax tree: 85 nested parentheses exceeded Python's recursion limit and
#: gave a traceback (issue 12), also inside a signed campaign update. Real conditions nest a few levels.
MAX_NESTING = 32
MAX_TOKENS = 256
#: Default bound on the points one rolling window keeps (oldest dropped and counted beyond it).
DEFAULT_WINDOW_POINTS = 10_000


class ConditionError(ValueError):
    """A condition that does not parse; the message ends with the 1-based column at fault."""

    def __init__(self, problem: str, column: int) -> None:
        super().__init__(f"{problem} at column {column}")
        self.problem = problem
        self.column = column


# ----------------------------------------------------------------------------------------------------
# Tokens

_TOKEN = re.compile(
    r"""
     (?P<space>\s+)
    |(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:\.\w+)*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<op><=|>=|==|!=|[<>+\-*/(),])
    """,
    re.VERBOSE | re.ASCII,
)
_KEYWORDS = frozenset({"and", "or", "not"})
_HINTS = {"=": " (use '==')", "&": " (use 'and')", "|": " (use 'or')", "!": " (use 'not' or '!=')"}
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Token:
    """One lexical token: `kind` is number, name, string, op, keyword or end."""

    kind: str
    text: str
    column: int


def tokenize(text: str) -> list[Token]:
    """Split a condition into tokens, ending with an `end` token; unknown characters are errors."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        column = position + 1
        if match is None:
            char = text[position]
            if char in "\"'":
                raise ConditionError("unterminated string", column)
            raise ConditionError(f"unexpected character {char!r}{_HINTS.get(char, '')}", column)
        kind = match.lastgroup or ""
        word = match.group()
        if kind == "name" and word in _KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(Token(kind, word, column))
        position = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# ----------------------------------------------------------------------------------------------------
# Syntax tree. Each node knows its kind: "bool", "num", "str" or "value" (a signal: number or name).

BOOL, NUM, STR, VALUE = "bool", "num", "str", "value"


@dataclass(frozen=True)
class Node:
    """Base of the syntax tree; `column` is where the construct starts."""

    column: int


@dataclass(frozen=True)
class Number(Node):
    """A numeric literal (also the result of folding constant arithmetic)."""

    value: float


@dataclass(frozen=True)
class String(Node):
    """A string literal: compared with value-table names."""

    value: str


@dataclass(frozen=True)
class Signal(Node):
    """The latest value of a signal, by its telemetry name."""

    name: str


@dataclass(frozen=True)
class Negate(Node):
    """Unary minus."""

    operand: Node


@dataclass(frozen=True)
class Arithmetic(Node):
    """`+ - * /` between two numeric operands."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    """One comparison (comparisons do not chain)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Logical(Node):
    """`and` / `or` over two boolean operands (short-circuit)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Not(Node):
    """Boolean negation."""

    operand: Node


@dataclass(frozen=True)
class Rolling(Node):
    """`min`/`max`/`avg` of a signal's samples over the last `seconds` (inclusive)."""

    function: str
    name: str
    seconds: float


@dataclass(frozen=True)
class Abs(Node):
    """Absolute value."""

    operand: Node


@dataclass(frozen=True)
class Changed(Node):
    """True while evaluating a sample of `name` whose value differs from that signal's previous one."""

    name: str


@dataclass(frozen=True)
class Expression:
    """A parsed, type-checked condition: its source text, syntax tree and the signals it reads."""

    text: str
    root: Node
    signals: frozenset[str]

    def __str__(self) -> str:
        return self.text


_COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
_ROLLING = ("min", "max", "avg")
_FUNCTIONS = (*_ROLLING, "abs", "changed")
_FOLD: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def parse_condition(text: str, names: SignalNames | None = None) -> Expression:
    """Parse and type-check a condition. Raises `ConditionError` naming the column at fault.

    With `names`, each signal name as written becomes the name samples carry (e.g. `MESSAGE.Signal` to
    its VSS path), unknown names are rejected, and so are comparisons that can never hold: a name that is
    not in the signal's value table, a signal without a value table compared with a name, a signal whose
    every value is named compared with a number.
    """
    parser = _Parser(text, names)
    return Expression(text, parser.parse(), frozenset(parser.signals))


class _Parser:
    def __init__(self, text: str, names: SignalNames | None) -> None:
        self.tokens = tokenize(text)
        if len(self.tokens) > MAX_TOKENS + 1:  # + the end token
            raise ConditionError(
                f"condition of {len(self.tokens) - 1} tokens is longer than {MAX_TOKENS}",
                self.tokens[MAX_TOKENS].column,
            )
        self.depth = 0
        self.index = 0
        self.names = names
        self.signals: set[str] = set()

    # -- token helpers ---------------------------------------------------------------------------------
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, kind: str, *texts: str) -> bool:
        token = self.token
        return token.kind == kind and (not texts or token.text in texts)

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        token = self.token
        if token.kind != kind or (text is not None and token.text != text):
            self.fail(token, f"expected {what or repr(text)}")
        return self.advance()

    @staticmethod
    def fail(token: Token, expected: str | None = None) -> NoReturn:
        found = "end of condition" if token.kind == "end" else repr(token.text)
        problem = f"unexpected {found}" + (f" ({expected})" if expected else "")
        raise ConditionError(problem, token.column)

    # -- grammar ---------------------------------------------------------------------------------------
    def parse(self) -> Node:
        if self.token.kind == "end":
            raise ConditionError("empty condition", 1)
        node, kind = self.or_expr()
        if self.token.kind != "end":
            self.fail(self.token)
        if kind != BOOL:
            raise ConditionError("a condition must be true or false, e.g. 'NAME > 80'", node.column)
        return node

    def or_expr(self) -> tuple[Node, str]:
        return self.logical("or", self.and_expr)

    def and_expr(self) -> tuple[Node, str]:
        return self.logical("and", self.not_expr)

    def logical(self, op: str, operand: Callable[[], tuple[Node, str]]) -> tuple[Node, str]:
        left, kind = operand()
        while self.at("keyword", op):
            token = self.advance()
            self.require(left, kind, BOOL, f"'{op}' needs a comparison on its left", token)
            right, right_kind = operand()
            self.require(right, right_kind, BOOL, f"'{op}' needs a comparison on its right")
            left, kind = Logical(left.column, op, left, right), BOOL
        return left, kind

    def nest(self, token: Token) -> None:
        """Enter one more level of nesting at `token` (`leave()` after); refuses more than MAX_NESTING."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ConditionError(f"nested more than {MAX_NESTING} levels deep", token.column)

    def leave(self) -> None:
        self.depth -= 1

    def not_expr(self) -> tuple[Node, str]:
        if self.at("keyword", "not"):
            token = self.advance()
            self.nest(token)
            operand, kind = self.not_expr()
            self.leave()
            self.require(operand, kind, BOOL, "'not' needs a comparison")
            return Not(token.column, operand), BOOL
        return self.comparison()

    def comparison(self) -> tuple[Node, str]:
        left, left_kind = self.sum()
        if not self.at("op", *_COMPARISONS):
            return left, left_kind
        token = self.advance()
        right, right_kind = self.sum()
        if self.at("op", *_COMPARISONS):
            raise ConditionError("comparisons do not chain (use 'and')", self.token.column)
        for node, kind in ((left, left_kind), (right, right_kind)):
            if kind == BOOL:
                raise ConditionError(f"'{token.text}' compares values, not conditions", node.column)
            if kind == STR and token.text not in ("==", "!="):
                problem = f"a name compares only with '==' or '!=', not '{token.text}'"
                raise ConditionError(problem, node.column)
        if STR in (left_kind, right_kind) and NUM in (left_kind, right_kind):
            raise ConditionError("a number never equals a name", token.column)
        self.check_value_table(left, right)
        self.check_value_table(right, left)
        return Compare(left.column, token.text, left, right), BOOL

    def sum(self) -> tuple[Node, str]:
        return self.arithmetic(("+", "-"), self.product)

    def product(self) -> tuple[Node, str]:
        return self.arithmetic(("*", "/"), self.unary)

    def arithmetic(self, ops: tuple[str, ...], operand: Callable[[], tuple[Node, str]]) -> tuple[Node, str]:
        left, kind = operand()
        while self.at("op", *ops):
            token = self.advance()
            self.numeric(left, kind, token.text)
            right, right_kind = operand()
            self.numeric(right, right_kind, token.text)
            left, kind = self.fold(Arithmetic(left.column, token.text, left, right), token), NUM
        return left, kind

    def unary(self) -> tuple[Node, str]:
        if self.at("op", "-"):
            token = self.advance()
            self.nest(token)
            operand, kind = self.unary()
            self.leave()
            self.numeric(operand, kind, "-")
            if isinstance(operand, Number):
                return Number(token.column, -operand.value), NUM
            return Negate(token.column, operand), NUM
        return self.primary()

    def primary(self) -> tuple[Node, str]:
        token = self.token
        if token.kind == "number":
            self.advance()
            return Number(token.column, float(token.text)), NUM
        if token.kind == "string":
            self.advance()
            return String(token.column, _ESCAPE.sub(r"\1", token.text[1:-1])), STR
        if token.kind == "name":
            self.advance()
            if self.at("op", "("):
                return self.call(token)
            return Signal(token.column, self.signal(token)), VALUE
        if self.at("op", "("):
            self.nest(self.advance())
            node, kind = self.or_expr()
            self.expect("op", ")")
            self.leave()
            return node, kind
        self.fail(token)

    def call(self, name: Token) -> tuple[Node, str]:
        function = name.text
        if function not in _FUNCTIONS:
            known = ", ".join(_FUNCTIONS)
            raise ConditionError(f"unknown function {function!r} (known: {known})", name.column)
        self.expect("op", "(")
        if function == "abs":
            self.nest(name)
            operand, kind = self.sum()
            self.leave()
            self.numeric(operand, kind, "abs()")
            self.expect("op", ")")
            return Abs(name.column, operand), NUM
        signal_token = self.expect("name", what=f"a signal name as the first argument of {function}()")
        signal = self.signal(signal_token)
        if function == "changed":
            self.expect("op", ")")
            return Changed(name.column, signal), BOOL
        self.expect("op", ",")
        seconds_token = self.expect("number", what="a window length in seconds")
        seconds = float(seconds_token.text)
        if not 0 < seconds <= MAX_WINDOW_S:
            raise ConditionError(f"window must be > 0 and <= {MAX_WINDOW_S:g} seconds", seconds_token.column)
        self.expect("op", ")")
        return Rolling(name.column, function, signal, seconds), NUM

    # -- checks ----------------------------------------------------------------------------------------
    def signal(self, token: Token) -> str:
        name = token.text
        if self.names is not None:
            try:
                name = self.names.resolve(name)
            except LookupError as exc:
                raise ConditionError(str(exc.args[0] if exc.args else exc), token.column) from None
        self.signals.add(name)
        return name

    def check_value_table(self, signal: Node, other: Node) -> None:
        names = self.names
        if names is None or names.known is None or not isinstance(signal, Signal):
            return
        named = names.choices.get(signal.name)
        if isinstance(other, String):
            if named is None:
                raise ConditionError(f"{signal.name!r} has no named values to compare with", other.column)
            if other.value not in named:
                values = ", ".join(sorted(named))
                problem = f"{other.value!r} is not a named value of {signal.name!r} (named values: {values})"
                raise ConditionError(problem, other.column)
        elif isinstance(other, Number) and named is not None and signal.name in names.fully_named:
            example = sorted(named)[0]
            problem = f"{signal.name!r} always decodes to a name: compare with one, e.g. == {example!r}"
            raise ConditionError(problem, other.column)

    @staticmethod
    def require(node: Node, kind: str, wanted: str, problem: str, token: Token | None = None) -> None:
        if kind != wanted:
            raise ConditionError(problem, token.column if token else node.column)

    @staticmethod
    def numeric(node: Node, kind: str, op: str) -> None:
        if kind == BOOL:
            raise ConditionError(f"'{op}' needs a number, not a condition", node.column)
        if kind == STR:
            raise ConditionError(f"'{op}' needs a number, not a name", node.column)

    @staticmethod
    def fold(node: Arithmetic, operator_token: Token) -> Node:
        if isinstance(node.left, Number) and isinstance(node.right, Number):
            try:
                return Number(node.left.column, _FOLD[node.op](node.left.value, node.right.value))
            except ZeroDivisionError:
                raise ConditionError("division by zero", operator_token.column) from None
        return node


# ----------------------------------------------------------------------------------------------------
# Evaluation


class _Undefined(Exception):
    """Raised inside evaluation when a value does not exist (an empty rolling window)."""


class RollingWindow:
    """Samples of one signal over the last `seconds`, bounded to `max_points` (oldest dropped, counted).

    `min`/`max` keep a monotonic deque (amortised O(1) per sample); `avg` keeps every point and a running
    sum. Only numeric values enter; a window with no point in range has no value (the condition is false).
    """

    def __init__(self, function: str, seconds: float, max_points: int = DEFAULT_WINDOW_POINTS) -> None:
        self.function = function
        self.seconds = seconds
        self.max_points = max_points
        self.dropped = 0
        self._times: deque[float] = deque()
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._since_resum = 0
        if function == "min":
            self._keep_back: Callable[[float, float], bool] | None = operator.lt  # drop back while v < back
        elif function == "max":
            self._keep_back = operator.gt
        else:
            self._keep_back = None

    def push(self, timestamp: float, value: float) -> None:
        """Add a point; evicts points older than the window relative to `timestamp`."""
        times, values = self._times, self._values
        better = self._keep_back
        if better is not None:
            while values and not better(values[-1], value):
                times.pop()
                values.pop()
        elif values:
            self._sum += value
            self._since_resum += 1
        else:
            self._sum = value
        if len(values) >= self.max_points:
            self.dropped += 1
            times.popleft()
            dropped = values.popleft()
            if better is None:
                self._sum -= dropped
        times.append(timestamp)
        values.append(value)
        self.evict(timestamp)

    def evict(self, now: float) -> None:
        """Forget points older than `now - seconds`."""
        times, values = self._times, self._values
        cutoff = now - self.seconds
        while times and times[0] < cutoff:
            times.popleft()
            dropped = values.popleft()
            if self._keep_back is None:
                self._sum -= dropped
        if self._keep_back is None and self._since_resum >= 4096:
            # A running sum drifts with rounding over many add/subtract pairs: recompute it now and then.
            self._sum = math.fsum(values)
            self._since_resum = 0

    def clear(self) -> None:
        """Forget every point (the clock went backwards); `dropped` keeps counting."""
        self._times.clear()
        self._values.clear()
        self._sum = 0.0
        self._since_resum = 0

    def value(self, now: float) -> float:
        """The window's min/max/avg at `now`; raises `_Undefined` when it holds no point."""
        self.evict(now)
        values = self._values
        if not values:
            raise _Undefined
        if self._keep_back is None:
            return self._sum / len(values)
        return values[0]


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_UNDEFINED_ERRORS = (KeyError, _Undefined, ZeroDivisionError, TypeError, ValueError, OverflowError)
Thunk = Callable[[], Any]


class Evaluator:
    """The running state of one condition: feed it samples of `expression.signals` with `update()`.

    Keeps the latest value of each signal the condition reads and one `RollingWindow` per distinct
    `min/max/avg(NAME, SECONDS)`. `undefined` counts evaluations that were false because a value was
    missing (signal not seen yet, empty window, division by zero, a number compared with a name).
    """

    def __init__(self, expression: Expression, max_window_points: int = DEFAULT_WINDOW_POINTS) -> None:
        self.expression = expression
        self.undefined = 0
        self._values: dict[str, SignalValue] = {}
        self._changed: dict[str, bool] = {}
        self._watch_changes: set[str] = set()
        self._windows: dict[tuple[str, str, float], RollingWindow] = {}
        self._now = -math.inf
        self._current = ""
        self._max_window_points = max_window_points
        self._root = self._compile(expression.root)
        by_signal: dict[str, list[RollingWindow]] = {}
        for (_, name, _), window in self._windows.items():
            by_signal.setdefault(name, []).append(window)
        self._windows_by_signal = {name: tuple(windows) for name, windows in by_signal.items()}

    @property
    def windows(self) -> list[RollingWindow]:
        """Every rolling window the condition keeps (for their `dropped` counters)."""
        return list(self._windows.values())

    def reset(self) -> None:
        """Forget every value and window point (the clock went backwards); counters keep counting."""
        self._values.clear()
        self._changed.clear()
        self._now = -math.inf
        for window in self._windows.values():
            window.clear()

    def update(self, sample: Sample) -> bool:
        """Record `sample` (one of `expression.signals`) and return whether the condition now holds."""
        name = sample.name
        value = sample.value
        if name in self._watch_changes:
            previous = self._values.get(name, value)
            self._changed[name] = bool(previous != value)
        self._values[name] = value
        self._now = sample.timestamp
        self._current = name
        windows = self._windows_by_signal.get(name)
        if windows is not None and isinstance(value, (int, float)):
            for window in windows:
                window.push(sample.timestamp, value)
        try:
            return bool(self._root())
        except _UNDEFINED_ERRORS:
            self.undefined += 1
            return False

    # -- compilation to closures -----------------------------------------------------------------------
    def _compile(self, node: Node) -> Thunk:
        if isinstance(node, (Number, String)):
            constant = node.value
            return lambda: constant
        if isinstance(node, Signal):
            values, name = self._values, node.name
            return lambda: values[name]
        if isinstance(node, Compare):
            return self._compile_compare(node)
        if isinstance(node, Arithmetic):
            op, left, right = _OPS[node.op], self._compile(node.left), self._compile(node.right)
            return lambda: op(left(), right())
        if isinstance(node, Negate):
            operand = self._compile(node.operand)
            return lambda: -operand()
        if isinstance(node, Abs):
            operand = self._compile(node.operand)
            return lambda: abs(operand())
        if isinstance(node, Logical):
            left, right = self._compile(node.left), self._compile(node.right)
            if node.op == "and":
                return lambda: left() and right()
            return lambda: left() or right()
        if isinstance(node, Not):
            operand = self._compile(node.operand)
            return lambda: not operand()
        if isinstance(node, Rolling):
            key = (node.function, node.name, node.seconds)
            window = self._windows.get(key)
            if window is None:
                window = RollingWindow(node.function, node.seconds, self._max_window_points)
                self._windows[key] = window
            return lambda: window.value(self._now)
        if isinstance(node, Changed):
            name = node.name
            self._watch_changes.add(name)
            changed = self._changed
            return lambda: self._current == name and changed.get(name, False)
        raise TypeError(f"cannot compile {node!r}")  # pragma: no cover

    def _compile_compare(self, node: Compare) -> Thunk:
        op = _OPS[node.op]
        # The common shape `NAME op CONSTANT` skips two closure calls.
        if isinstance(node.left, Signal) and isinstance(node.right, (Number, String)):
            values, name, constant = self._values, node.left.name, node.right.value
            return lambda: op(values[name], constant)
        left, right = self._compile(node.left), self._compile(node.right)
        return lambda: op(left(), right())
