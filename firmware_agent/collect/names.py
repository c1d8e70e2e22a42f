"""Which signal names a campaign may use, and the one name each signal carries in samples and telemetry.

A sample is named by its VSS path where `dbc/vss.toml` maps the signal, else `MESSAGE.Signal`. Campaigns
and conditions may name a mapped signal either way; `SignalNames.resolve()` turns both into the sample
name, and, when the catalog's names are known, rejects a name no database defines (suggesting close ones).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from firmware_agent.decode.catalog import Catalog
from firmware_agent.vss import VssMap


class UnknownSignal(LookupError):
    """A signal name that no loaded database defines; the message suggests close matches."""


@dataclass(frozen=True)
class SignalNames:
    """`known`: every sample name the decoder can produce (None: accept any name).

    `aliases`: `MESSAGE.Signal` -> VSS path for every mapped signal, so either spelling resolves to the
    name samples carry. `choices` and `fully_named` let conditions check comparisons with value-table
    names (the decode stage turns a named raw value into its name).
    """

    known: frozenset[str] | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: Sample name -> the value-table names it can decode to (signals with a value table only).
    choices: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Signals whose every raw value is named: they never decode to a number.
    fully_named: frozenset[str] = frozenset()

    @classmethod
    def from_catalog(cls, catalog: Catalog, vss: VssMap | None = None) -> SignalNames:
        """Every signal of every message in `catalog`, named as the decode stage names it."""
        known: set[str] = set()
        aliases: dict[str, str] = {}
        choices: dict[str, frozenset[str]] = {}
        fully_named: set[str] = set()
        for _, message in catalog.all_messages():
            for signal in message.signals:
                key = f"{message.name}.{signal.name}"
                name = vss.name_for(message.name, signal.name) if vss is not None else key
                known.add(name)
                if name != key:
                    aliases[key] = name
                if signal.choices:
                    choices[name] = frozenset(str(choice) for choice in signal.choices.values())
                    if signal.length <= 16 and len(signal.choices) >= 2**signal.length:
                        fully_named.add(name)
        return cls(frozenset(known), aliases, choices, frozenset(fully_named))

    def resolve(self, name: str) -> str:
        """The sample name for `name` (VSS path or `MESSAGE.Signal`); raises `UnknownSignal` if unknown."""
        resolved = self.aliases.get(name, name)
        if self.known is not None and resolved not in self.known:
            raise UnknownSignal(f"unknown signal {name!r}{self._suggestion(name)}")
        return resolved

    def _suggestion(self, name: str) -> str:
        candidates = [*(self.known or ()), *self.aliases]
        by_lower = {candidate.lower(): candidate for candidate in candidates}
        close = [by_lower[name.lower()]] if name.lower() in by_lower else []
        close = close or difflib.get_close_matches(name, candidates, n=3, cutoff=0.75)
        if not close:
            return ""
        return " (did you mean " + " or ".join(repr(candidate) for candidate in close) + "?)"
