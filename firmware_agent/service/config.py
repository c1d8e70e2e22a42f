"""The agent's configuration: a TOML file, overridden by command-line flags.

Every key is documented in `docs/configuration.md`. Relative paths in the file are relative to the file's
folder; paths given as flags are relative to the working directory. A problem is reported as one line
naming the file, the key and what is wrong (`UserError`, exit status 2).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

from firmware_agent.errors import UserError
from firmware_agent.identity.settings import IdentitySettings
from firmware_agent.pipeline.e2e_check import E2ESettings
from firmware_agent.sources.reader import ReaderSettings
from firmware_agent.sources.spec import SourceSpec
from firmware_agent.telemetry.broker import BrokerConfig
from firmware_agent.telemetry.topics import VEHICLE_ID_PATTERN
from firmware_agent.tomlfile import key_line, parse_toml
from firmware_agent.vehicle import default_dbc_dir, default_dbc_specs

#: Where state lives when neither the file nor `--state-dir` says (systemd's `StateDirectory=` wins).
DEFAULT_STATE_DIR = Path("/var/lib/firmware-agent")
#: The signing key's file name inside the state directory when `signing_key` is not set.
DEFAULT_SIGNING_KEY_NAME = "signing-key.pem"
_COMMAND_LINE = "command line"


class ConfigError(UserError):
    """A configuration value the agent cannot use."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything `firmware-agent run` needs, resolved and validated."""

    vehicle_id: str
    sources: tuple[SourceSpec, ...]
    #: `[broker]` url, TLS files and keepalive: the one broker settings type, validated where it is made
    broker: BrokerConfig
    signing_key: Path
    state_dir: Path
    dbc: tuple[str, ...] = field(default_factory=lambda: tuple(default_dbc_specs()))
    vss: Path = field(default_factory=lambda: default_dbc_dir() / "vss.toml")
    collect: str = "all"
    campaign_keys: tuple[Path, ...] = ()
    outbox_max_bytes: int = 64 * 1024 * 1024
    #: `[broker] max_inflight`: unacknowledged publishes at a time (the uploader's window)
    max_inflight: int = 20
    payload_version: int = 2
    e2e: E2ESettings = field(default_factory=E2ESettings)
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    stats_interval: float = 60.0
    heartbeat_interval: float = 1.0
    shutdown_timeout: float = 10.0
    exit_at_end: bool = False
    origin: str = _COMMAND_LINE
    #: Where `health.json` goes: systemd's `$RUNTIME_DIRECTORY` (RAM), else the state directory.
    runtime_dir: Path | None = None

    @property
    def outbox_path(self) -> Path:
        """The SQLite outbox inside the state directory."""
        return self.state_dir / "outbox.sqlite3"

    @property
    def campaign_path(self) -> Path:
        """The last campaign applied from a signed update (it outlives restarts)."""
        return self.state_dir / "campaign-update.cbor"

    @property
    def campaign_serial_path(self) -> Path:
        """The serial of the last applied campaign update (replays below it are refused)."""
        return self.state_dir / "campaign-serial"

    @property
    def health_path(self) -> Path:
        """The health summary the agent rewrites on every heartbeat (in RAM under systemd)."""
        return (self.runtime_dir or self.state_dir) / "health.json"


@dataclass
class Overrides:
    """Flags of `firmware-agent run`; None (or empty) means 'use the file or the default'."""

    sources: list[str] = field(default_factory=list)
    dbc: list[str] = field(default_factory=list)
    collect: str | None = None
    broker: str | None = None
    vehicle_id: str | None = None
    signing_key: str | None = None
    state_dir: str | None = None
    exit_at_end: bool = False


_TOP_KEYS = {
    "vehicle_id",
    "sources",
    "dbc",
    "vss",
    "collect",
    "campaign_keys",
    "signing_key",
    "state_dir",
    "broker",
    "outbox",
    "e2e",
    "pipeline",
    "identity",
    "telemetry",
}
_SECTION_KEYS = {
    "broker": {"url", "ca_file", "cert_file", "key_file", "keepalive", "max_inflight"},
    "outbox": {"max_bytes"},
    "telemetry": {"payload_version"},
    "e2e": {"burst_count", "burst_seconds", "max_jump"},
    "pipeline": {
        "queue_frames",
        "chunk_frames",
        "backoff_initial",
        "backoff_max",
        "stats_interval",
        "heartbeat_interval",
        "shutdown_timeout",
    },
}


class _Reader:
    """Typed access to the file's values, each failure naming the file and the key."""

    def __init__(self, origin: str, document: Mapping[str, Any], base: Path, text: str | None = None) -> None:
        self.origin = origin
        self.document = document
        self.base = base
        self.source_text = text

    def fail(self, key: str, problem: str) -> ConfigError:
        line = key_line(self.source_text, key) if self.source_text is not None else None
        where = f"{self.origin}:{line}" if line is not None else self.origin
        return ConfigError(f"{where}: {key}: {problem}")

    def get(self, key: str) -> Any:
        node: Any = self.document
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def text(self, key: str) -> str | None:
        value = self.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(key, "expected a non-empty string")
        return value

    def path(self, key: str) -> Path | None:
        value = self.text(key)
        return None if value is None else self.base / Path(value).expanduser()

    def texts(self, key: str) -> list[str]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "expected a list of strings")
        return list(value)

    def number(
        self,
        key: str,
        default: float,
        minimum: float = 0.0,
        integer: bool = False,
        maximum: float = 1e9,
    ) -> Any:
        value = self.get(key)
        if value is None:
            return default
        kinds = (int,) if integer else (int, float)
        # nan passes every comparison and inf every minimum: both broke the agent later (a traceback at
        # shutdown for `shutdown_timeout = inf`), so a number must be finite and within its range
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            kind = "an integer" if integer else "a number"
            raise self.fail(key, f"expected {kind} from {minimum:g} to {maximum:g}, got {value!r}")
        return value


def _read_file(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc
    return text, parse_toml(text, str(path), ConfigError)


def _check_keys(reader: _Reader) -> None:
    for key, value in reader.document.items():
        if key not in _TOP_KEYS:
            raise reader.fail(key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
        allowed = _SECTION_KEYS.get(key)
        if allowed is not None:
            if not isinstance(value, Mapping):
                raise reader.fail(key, "expected a table")
            for sub in value:
                if sub not in allowed:
                    raise reader.fail(f"{key}.{sub}", f"unknown key (known: {', '.join(sorted(allowed))})")


def _flag_path(value: str | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def load_config(path: Path | None, overrides: Overrides) -> AgentConfig:
    """Read `path` (if any), apply `overrides`, fill defaults and validate; `ConfigError` on a problem."""
    text, document = _read_file(path) if path is not None else (None, {})
    origin = str(path) if path is not None else _COMMAND_LINE
    base = path.parent if path is not None else Path.cwd()
    file = _Reader(origin, document, base, text)
    _check_keys(file)
    flags = _Reader(_COMMAND_LINE, {}, Path.cwd())

    vehicle_id = overrides.vehicle_id or file.text("vehicle_id")
    vehicle_key = "--vehicle-id" if overrides.vehicle_id else "vehicle_id"
    where = flags if overrides.vehicle_id else file
    if not vehicle_id:
        raise where.fail(vehicle_key, "missing: every vehicle needs an id (--vehicle-id or vehicle_id)")
    if not VEHICLE_ID_PATTERN.fullmatch(vehicle_id):
        raise where.fail(
            vehicle_key,
            f"{vehicle_id!r} not allowed: 1-64 letters, digits, '-', '_', '.' (no '/', '+', '#', spaces)",
        )

    source_texts = overrides.sources or file.texts("sources")
    if not source_texts:
        raise file.fail("sources", "no source: give --source SPEC or sources = [...] in the configuration")
    sources = []
    for text in source_texts:
        try:
            sources.append(SourceSpec.parse(text))
        except UserError as exc:
            if overrides.sources:
                raise flags.fail("--source", str(exc)) from exc
            raise file.fail("sources", str(exc)) from exc

    dbc = overrides.dbc or [_relative_dbc(spec, base) for spec in file.texts("dbc")] or default_dbc_specs()
    collect = overrides.collect or file.text("collect") or "all"
    if collect != "all" and not overrides.collect:
        collect = str(base / collect)

    broker_url = overrides.broker or file.text("broker.url")
    if not broker_url:
        raise file.fail("broker.url", "missing: give --broker URL or [broker] url = ...")
    ca_file, cert_file, key_file = (
        file.path(f"broker.{key}") for key in ("ca_file", "cert_file", "key_file")
    )
    keepalive = file.number("broker.keepalive", 30, 5, integer=True, maximum=65535)
    max_inflight = file.number("broker.max_inflight", 20, 1, integer=True)
    try:
        broker = BrokerConfig(broker_url, ca_file, cert_file, key_file, keepalive)
    except UserError as exc:
        where_broker = flags if overrides.broker else file
        raise where_broker.fail("--broker" if overrides.broker else "broker", str(exc)) from exc

    state_dir = _state_dir(overrides.state_dir, file)
    signing_key = (
        _flag_path(overrides.signing_key) or file.path("signing_key") or state_dir / DEFAULT_SIGNING_KEY_NAME
    )
    try:
        e2e = E2ESettings(
            burst_count=file.number("e2e.burst_count", 5, 1, integer=True),
            burst_seconds=file.number("e2e.burst_seconds", 1.0, 0.001),
            max_jump=file.number("e2e.max_jump", 3, 1, integer=True),
        )
    except ValueError as exc:
        raise file.fail("e2e", str(exc)) from exc
    chunk_frames = file.number("pipeline.chunk_frames", 256, 1, integer=True)
    reader = ReaderSettings(
        max_frames=file.number("pipeline.queue_frames", 16384, chunk_frames, integer=True),
        chunk_frames=chunk_frames,
        backoff_initial=file.number("pipeline.backoff_initial", 0.1, 0.001),
        backoff_max=file.number("pipeline.backoff_max", 5.0, 0.001),
    )
    identity_table = file.get("identity") or {}
    if not isinstance(identity_table, Mapping):
        raise file.fail("identity", "expected a table")
    return AgentConfig(
        vehicle_id=vehicle_id,
        sources=tuple(sources),
        broker=broker,
        signing_key=signing_key,
        state_dir=state_dir,
        dbc=tuple(dbc),
        vss=file.path("vss") or default_dbc_dir() / "vss.toml",
        collect=collect,
        campaign_keys=tuple(base / Path(text).expanduser() for text in file.texts("campaign_keys")),
        outbox_max_bytes=file.number("outbox.max_bytes", 64 * 1024 * 1024, 64 * 1024, integer=True),
        max_inflight=max_inflight,
        payload_version=file.number("telemetry.payload_version", 2, 1, integer=True, maximum=2),
        e2e=e2e,
        reader=reader,
        identity=IdentitySettings.from_table(identity_table, origin),
        stats_interval=file.number("pipeline.stats_interval", 60.0, 0.0),
        heartbeat_interval=file.number("pipeline.heartbeat_interval", 1.0, 0.01),
        shutdown_timeout=file.number("pipeline.shutdown_timeout", 10.0, 0.0),
        exit_at_end=overrides.exit_at_end,
        origin=origin,
        runtime_dir=Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
        if os.environ.get("RUNTIME_DIRECTORY")
        else None,
    )


def _state_dir(flag: str | None, file: _Reader) -> Path:
    """`--state-dir`, else the file's `state_dir`, else systemd's `$STATE_DIRECTORY`, else the default."""
    return (
        _flag_path(flag)
        or file.path("state_dir")
        or (Path(os.environ["STATE_DIRECTORY"]) if os.environ.get("STATE_DIRECTORY") else DEFAULT_STATE_DIR)
    )


def _relative_dbc(spec: str, base: Path) -> str:
    """A `[CHANNEL=]FILE` spec from the file, with FILE made relative to the file's folder."""
    channel, equals, path = spec.partition("=")
    if equals and not (base / spec).exists():
        return f"{channel}={base / Path(path).expanduser()}"
    return str(base / Path(spec).expanduser())


@dataclass(frozen=True)
class IdentityContext:
    """What the `profile` commands need of the agent's configuration: the databases and `[identity]`."""

    settings: IdentitySettings
    dbc: tuple[str, ...]
    vss: Path
    state_dir: Path


def load_identity_context(path: Path | None, state_dir: str | None, dbc: list[str]) -> IdentityContext:
    """The identity settings, databases and state directory of the agent configured by `path` (if any).

    Flags win over the file, as for `run`: `state_dir` and `dbc` (when given). Only the keys these need
    are read, so a configuration without sources or broker will do.
    """
    text, document = _read_file(path) if path is not None else (None, {})
    origin = str(path) if path is not None else _COMMAND_LINE
    base = path.parent if path is not None else Path.cwd()
    file = _Reader(origin, document, base, text)
    _check_keys(file)
    table = file.get("identity") or {}
    if not isinstance(table, Mapping):
        raise file.fail("identity", "expected a table")
    directory = _state_dir(state_dir, file)
    return IdentityContext(
        settings=IdentitySettings.from_table(table, origin),
        dbc=tuple(dbc or [_relative_dbc(spec, base) for spec in file.texts("dbc")] or default_dbc_specs()),
        vss=file.path("vss") or default_dbc_dir() / "vss.toml",
        state_dir=directory,
    )
