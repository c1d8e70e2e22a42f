"""Campaign definitions: which signals to collect, how (periodic, on change, triggered, all) and batching.

A campaign file holds one or more `[[campaign]]` tables (schema and defaults in `docs/campaigns.md`).
The same document arrives as a dict when the backend pushes a signed campaign update over MQTT, so
`parse_campaigns()` takes the parsed document and `load_campaigns()`/`loads_campaigns()` read TOML.
Every problem is one line naming the file (and line, where it can be found), the campaign and the key.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from firmware_agent.collect.conditions import ConditionError, Expression, parse_condition
from firmware_agent.collect.names import SignalNames
from firmware_agent.errors import UserError
from firmware_agent.tomlfile import parse_toml
from firmware_agent.values import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL

PERIODIC, ON_CHANGE, TRIGGERED, ALL = "periodic", "on_change", "triggered", "all"
MODES = (PERIODIC, ON_CHANGE, TRIGGERED, ALL)
PRIORITIES = {"low": PRIORITY_LOW, "normal": PRIORITY_NORMAL, "high": PRIORITY_HIGH}
#: `--collect all`: the built-in campaign's name.
ALL_CAMPAIGN_NAME = "all"


class CampaignError(UserError):
    """A campaign document that cannot be used; one line naming file, line, campaign and key."""


@dataclass(frozen=True)
class Campaign:
    """One collection campaign. `signals` are sample names (VSS path, else `MESSAGE.Signal`).

    With mode `all`, empty `signals` means every decoded sample. Only the keys of the campaign's mode
    matter; the others keep their defaults.
    """

    name: str
    mode: str
    signals: tuple[str, ...] = ()
    priority: int = PRIORITY_NORMAL
    batch_interval_s: float = 10.0
    max_batch_samples: int = 10_000
    period_ms: float = 1000.0
    deadband: float = 0.0
    deadband_relative: float = 0.0
    min_interval_ms: float = 0.0
    condition: Expression | None = None
    pre_trigger_s: float = 10.0
    post_trigger_s: float = 5.0
    cooldown_s: float = 0.0
    max_pre_trigger_samples: int = 50_000

    @property
    def takes_every_signal(self) -> bool:
        """True for an `all` campaign without a signal list: it receives every sample."""
        return self.mode == ALL and not self.signals

    def needed_signals(self) -> frozenset[str] | None:
        """The sample names this campaign reads (collected or in its condition); None means all."""
        if self.takes_every_signal:
            return None
        condition = self.condition.signals if self.condition is not None else frozenset()
        return frozenset(self.signals) | condition


def builtin_all() -> Campaign:
    """The campaign behind `--collect all`: every decoded sample, batched every 10 s."""
    return Campaign(name=ALL_CAMPAIGN_NAME, mode=ALL)


def needed_signals(campaigns: Iterable[Campaign]) -> frozenset[str] | None:
    """Every sample name some campaign reads (sources may filter on it); None when one takes all."""
    needed: set[str] = set()
    for campaign in campaigns:
        names = campaign.needed_signals()
        if names is None:
            return None
        needed |= names
    return frozenset(needed)


def campaigns_for_option(value: str, names: SignalNames | None = None) -> list[Campaign]:
    """`--collect all|FILE`: the built-in `all` campaign, or the campaigns of a TOML file.

    (`./all` names a file called `all`.)
    """
    if value == ALL_CAMPAIGN_NAME:
        return [builtin_all()]
    return load_campaigns(Path(value), names)


def load_campaigns(path: Path, names: SignalNames | None = None) -> list[Campaign]:
    """Read a campaign TOML file; `names` (when given) validates and resolves signal names."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CampaignError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{path}: not a UTF-8 text file") from exc
    except OSError as exc:
        raise CampaignError(f"{path}: {exc.strerror or exc}") from exc
    return loads_campaigns(text, str(path), names)


def loads_campaigns(
    text: str, source: str = "<campaigns>", names: SignalNames | None = None
) -> list[Campaign]:
    """Parse campaign TOML text; `source` names it in errors (a file path, or e.g. `mqtt campaign`)."""
    document = parse_toml(text, source, CampaignError)
    return parse_campaigns(document, source, names, text)


def parse_campaigns(
    document: Mapping[str, Any],
    source: str = "<campaigns>",
    names: SignalNames | None = None,
    text: str | None = None,
) -> list[Campaign]:
    """Build campaigns from a parsed document `{"campaign": [{...}, ...]}`.

    `text`, the TOML the document came from, lets errors carry a line number.
    """
    if not isinstance(document, Mapping):
        raise CampaignError(f"{source}: expected a table with [[campaign]] entries")
    for key in document:
        if key != "campaign":
            raise CampaignError(f"{source}: unknown top-level key {key!r} (expected [[campaign]] tables)")
    tables = document.get("campaign")
    if not isinstance(tables, list) or not tables:
        raise CampaignError(f"{source}: no [[campaign]] tables")
    campaigns: list[Campaign] = []
    seen: set[str] = set()
    for index, table in enumerate(tables):
        reader = _TableReader(source, text, index, table, names)
        campaign = reader.campaign()
        if campaign.name in seen:
            reader.fail("name", f"campaign name {campaign.name!r} is used twice")
        seen.add(campaign.name)
        campaigns.append(campaign)
    from firmware_agent.collect.budget import budget_problem  # budget needs this module's types

    problem = budget_problem(campaigns)
    if problem is not None:
        raise CampaignError(f"{source}: {problem}")
    return campaigns


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_COMMON_KEYS = frozenset({"name", "mode", "signals", "priority", "max_batch_samples"})
_MODE_KEYS = {
    PERIODIC: frozenset({"period_ms", "batch_interval_s"}),
    ON_CHANGE: frozenset({"deadband", "deadband_relative", "min_interval_ms", "batch_interval_s"}),
    TRIGGERED: frozenset(
        {"condition", "pre_trigger_s", "post_trigger_s", "cooldown_s", "max_pre_trigger_samples"}
    ),
    ALL: frozenset({"batch_interval_s"}),
}
_ALL_KEYS = _COMMON_KEYS.union(*_MODE_KEYS.values())
#: (minimum, maximum, minimum is exclusive) per numeric key.
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "batch_interval_s": (0.0, 3600.0, True),
    "max_batch_samples": (1, 1_000_000, False),
    "period_ms": (1.0, 3_600_000.0, False),
    "deadband": (0.0, math.inf, False),
    "deadband_relative": (0.0, math.inf, False),
    "min_interval_ms": (0.0, 3_600_000.0, False),
    "pre_trigger_s": (0.0, 600.0, False),
    "post_trigger_s": (0.0, 600.0, False),
    "cooldown_s": (0.0, 86_400.0, False),
    "max_pre_trigger_samples": (1, 1_000_000, False),
}
_INTEGER_KEYS = frozenset({"max_batch_samples", "max_pre_trigger_samples"})


class _TableReader:
    """Reads one `[[campaign]]` table, reporting problems with file, line, campaign and key."""

    def __init__(
        self, source: str, text: str | None, index: int, table: Any, names: SignalNames | None
    ) -> None:
        self.source = source
        self.text = text
        self.index = index
        self.table = table
        self.names = names
        self.label = f"campaign #{index + 1}"

    def fail(self, key: str | None, problem: str, needle: str | None = None) -> NoReturn:
        line = _line_of(self.text, self.index, key, needle) if self.text is not None else None
        where = f"{self.source}:{line}" if line is not None else self.source
        prefix = f"{where}: {self.label}"
        raise CampaignError(f"{prefix}: {key}: {problem}" if key else f"{prefix}: {problem}")

    def campaign(self) -> Campaign:
        if not isinstance(self.table, Mapping):
            self.fail(None, "expected a table")
        table = self.table
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            self.fail("name", "required: 1 to 64 letters, digits, '_', '-' or '.'")
        self.label = f"campaign {name!r}"
        mode = table.get("mode")
        if mode not in MODES:
            self.fail("mode", f"required, one of {', '.join(MODES)} (got {mode!r})")
        for key in table:
            if key not in _ALL_KEYS:
                self.fail(key, f"unknown key (known: {', '.join(sorted(_ALL_KEYS))})")
            if key not in _COMMON_KEYS and key not in _MODE_KEYS[mode]:
                self.fail(key, f"does not apply to mode {mode!r}")
        values: dict[str, Any] = {"name": name, "mode": mode, "signals": self.signals(mode)}
        values["priority"] = self.priority(PRIORITY_HIGH if mode == TRIGGERED else PRIORITY_NORMAL)
        for key in _BOUNDS:
            if key in table:
                values[key] = self.number(key)
        if mode == TRIGGERED:
            values["condition"] = self.condition()
        return Campaign(**values)

    def signals(self, mode: str) -> tuple[str, ...]:
        raw = self.table.get("signals")
        if raw is None:
            if mode == ALL:
                return ()
            self.fail("signals", "required: a list of VSS paths or MESSAGE.Signal names")
        if not isinstance(raw, list) or not raw:
            self.fail("signals", "expected a non-empty list of signal names")
        resolved: dict[str, None] = {}
        for item in raw:
            if not isinstance(item, str) or not item:
                self.fail("signals", f"expected signal names as strings, got {item!r}")
            for name in self.expand(item):
                resolved[name] = None
        return tuple(resolved)

    def expand(self, item: str) -> list[str]:
        if item.endswith(".*"):
            prefix = item[:-1]
            if self.names is None or self.names.known is None:
                self.fail("signals", f"{item!r}: a wildcard needs the vehicle's databases", item)
            # Either spelling may be used: `WHEEL_SPEEDS.*` also covers signals known by a VSS path.
            matches = sorted(
                {name for name in self.names.known if name.startswith(prefix)}
                | {path for key, path in self.names.aliases.items() if key.startswith(prefix)}
            )
            if not matches:
                self.fail("signals", f"{item!r} matches no signal", item)
            return matches
        if self.names is None:
            return [item]
        try:
            return [self.names.resolve(item)]
        except LookupError as exc:
            self.fail("signals", str(exc), item)

    def priority(self, default: int) -> int:
        raw = self.table.get("priority")
        if raw is None:
            return default
        if raw not in PRIORITIES:
            self.fail("priority", f"one of {', '.join(PRIORITIES)} (got {raw!r})")
        return PRIORITIES[raw]

    def number(self, key: str) -> float | int:
        raw = self.table[key]
        integer = key in _INTEGER_KEYS
        valid_type = isinstance(raw, int) if integer else isinstance(raw, (int, float))
        if isinstance(raw, bool) or not valid_type:
            self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {raw!r}")
        low, high, exclusive = _BOUNDS[key]
        if not math.isfinite(raw) or raw > high or raw < low or (exclusive and raw == low):
            bound = f"> {low:g}" if exclusive else f">= {low:g}"
            upper = f" and <= {high:g}" if math.isfinite(high) else ""
            self.fail(key, f"must be {bound}{upper} (got {raw!r})")
        return int(raw) if integer else float(raw)

    def condition(self) -> Expression:
        raw = self.table.get("condition")
        if not isinstance(raw, str) or not raw.strip():
            self.fail("condition", 'required for mode "triggered", e.g. "Vehicle.Speed > 120"')
        try:
            return parse_condition(raw, self.names)
        except ConditionError as exc:
            self.fail("condition", str(exc))


_TABLE_HEADER = re.compile(r"^\s*\[")
_CAMPAIGN_HEADER = re.compile(r"^\s*\[\[\s*campaign\s*\]\]")


def _line_of(text: str | None, index: int, key: str | None, needle: str | None = None) -> int | None:
    """Best-effort line (1-based) of `key` (or of the string `needle`) in the index-th [[campaign]] table."""
    if text is None:
        return None
    lines = text.splitlines()
    headers = [number for number, line in enumerate(lines) if _CAMPAIGN_HEADER.match(line)]
    if index >= len(headers):
        return None
    start = headers[index]
    end = next((n for n in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[n])), len(lines))
    if needle is not None:
        quoted = (f'"{needle}"', f"'{needle}'")
        for number in range(start + 1, end):
            if any(q in lines[number] for q in quoted):
                return number + 1
    if key is not None:
        assignment = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
        for number in range(start + 1, end):
            if assignment.match(lines[number]):
                return number + 1
    return start + 1
