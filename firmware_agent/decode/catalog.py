"""The DBC catalog: which message definition applies to a frame seen on a channel.

Databases are bound either to every channel (`--dbc FILE`) or to one (`--dbc CHANNEL=FILE`); several
databases on one channel merge. A J1939 message matches its exact 29-bit identifier first; a frame whose
identifier no message defines falls back to matching by PGN (priority and source address masked, and the
destination address for PDU1 PGNs). Two J1939 messages with one PGN (the same parameter group from two
source addresses) each keep their own identifier; which of them the PGN fallback picks (the last defined)
is reported once when the catalog is built.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import cantools
from cantools.database.can import Database, Message

from firmware_agent.decode.memo import KeyMemo
from firmware_agent.errors import UserError

_J1939_PROTOCOL = "j1939"


@dataclass(frozen=True)
class DbcSpec:
    """A `--dbc [CHANNEL=]FILE` argument: `channel` is None when the file applies to every channel."""

    path: Path
    channel: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DbcSpec:
        """Parse `FILE` or `CHANNEL=FILE`; a file whose own name contains `=` still works as `FILE`."""
        if "=" in spec and not Path(spec).exists():
            channel, _, path = spec.partition("=")
            if channel and path:
                return cls(Path(path), channel)
        return cls(Path(spec), None)


def load_database(path: Path, warn: Callable[[str], None] | None = None) -> Database:
    """Load a DBC/ARXML/KCD/SYM file with cantools, falling back to `strict=False`.

    Raises `UserError` naming the file (and line, where cantools reports one) when it cannot be loaded.
    `warn` receives one line when the file only loads without strict checks.
    """
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder, not a database; give its files (--dbc {path}/NAME.dbc, or CHANNEL=FILE "
            "for each bus)"
        )
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    from firmware_agent.decode.dbc_cache import load_cached

    database: Database = load_cached(path, _parse_database, warn)
    return database


def _parse_database(path: Path, warn: Callable[[str], None]) -> Database:
    try:
        if path.suffix.lower() == ".dbc":
            return _load_dbc(path, warn)
        _check_message_lengths(path)
        return _as_can_database(path, cantools.database.load_file(str(path), strict=True))
    except (cantools.database.UnsupportedDatabaseFormatError, ValueError, KeyError) as strict_error:
        try:
            database = cantools.database.load_file(str(path), strict=False)
        except Exception as exc:
            raise UserError(_describe_load_error(path, exc)) from exc
        warn(f"{path}: loaded with strict=False ({_strip_format_prefix(str(strict_error))})")
        return _as_can_database(path, database)
    except UserError:
        raise
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text database file ({exc.reason})") from exc
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise UserError(_describe_load_error(path, exc)) from exc


#: The longest frame there is (CAN FD: 64 data bytes). cantools builds per-byte structures for a message's
#: declared length: one declaring 2**31 bytes took 14 GB before any error (issue 12).
MAX_MESSAGE_LENGTH = 64
#: ARXML also describes FlexRay and Ethernet frames (longer, not read here): only absurd lengths are refused.
MAX_ARXML_FRAME_LENGTH = 65_535
#: Where each format declares a message's length in bytes: (name, length) groups, by file suffix.
_DECLARED_LENGTHS = {
    ".dbc": re.compile(rb"^[ \t]*BO_[ \t]+\d+[ \t]+(\w+)[ \t]*:[ \t]*(\d+)", re.M),
    ".kcd": re.compile(rb"<Message\b(?=[^>]*\bname=\"([^\"]*)\")[^>]*\blength=\"\s*(\d+)", re.S),
    ".sym": re.compile(rb"^\[([^\]\r\n]*)\](?:(?!^\[).)*?^[ \t]*Len[ \t]*=[ \t]*(\d+)", re.M | re.S),
    ".arxml": re.compile(rb"()<FRAME-LENGTH>\s*(\d+)"),  # the name: the nearest SHORT-NAME before it
}
_SHORT_NAME = re.compile(rb"<SHORT-NAME>([^<]*)</SHORT-NAME>")


def _check_message_lengths(path: Path) -> None:
    """Refuse a database declaring a message longer than any CAN frame, before cantools sees it."""
    pattern = _DECLARED_LENGTHS.get(path.suffix.lower())
    if pattern is None:
        return
    text = path.read_bytes()
    arxml = path.suffix.lower() == ".arxml"
    limit = MAX_ARXML_FRAME_LENGTH if arxml else MAX_MESSAGE_LENGTH
    for match in pattern.finditer(text):
        length = int(match.group(2))
        if length > limit:
            line = text.count(b"\n", 0, match.start(2)) + 1
            named = match.group(1) or [b"?", *_SHORT_NAME.findall(text, 0, match.start())][-1]
            name = named.decode("utf-8", "replace")
            bound = f"a frame has at most {limit}" if arxml else f"a CAN frame has at most {limit} (CAN FD)"
            raise UserError(f"{path}:{line}: message {name} declares {length} bytes; {bound}")


def _load_dbc(path: Path, warn: Callable[[str], None]) -> Database:
    _check_message_lengths(path)
    # For DBC files strictness is only checked per message (signals that overlap or do not fit), so
    # one non-strict parse plus that check per message gives the same result as a strict load with a
    # fallback, without parsing the file twice.
    database = _as_can_database(path, cantools.database.load_file(str(path), strict=False))
    for message in database.messages:
        try:
            message.refresh(strict=True)
        except cantools.database.Error as strict_error:
            warn(f"{path}: loaded with strict=False ({strict_error})")
            break
    return database


def _as_can_database(path: Path, database: object) -> Database:
    if not isinstance(database, Database):
        raise UserError(f"{path}: not a CAN database (diagnostics databases cannot decode frames)")
    return database


def _strip_format_prefix(message: str) -> str:
    # cantools wraps each format's error as 'DBC: "..."'; keep the inner text.
    match = re.match(r'^\w+: "(.*)"$', message.strip(), re.S)
    return match.group(1) if match else message


def _describe_load_error(path: Path, exc: Exception) -> str:
    text = _strip_format_prefix(str(exc))
    match = re.search(r"line (\d+), column (\d+): (.*)", text, re.S)
    if match:
        line, column, rest = match.groups()
        return f"{path}:{line}:{column}: DBC syntax error near {rest.strip()!r}"
    return f"{path}: cannot load database: {text}"


def is_j1939(message: Message) -> bool:
    """True when the message is matched by PGN rather than by raw identifier."""
    return message.protocol == _J1939_PROTOCOL and message.is_extended_frame


def j1939_pgn(frame_id: int) -> int:
    """The PGN of a 29-bit J1939 identifier (the destination address is masked for PDU1 PGNs)."""
    pgn = (frame_id >> 8) & 0x3FFFF
    pdu_format = (pgn >> 8) & 0xFF
    if pdu_format < 240:
        pgn &= 0x3FF00
    return pgn


@dataclass(frozen=True)
class BusBitrate:
    """A bus's bitrates as its database declares them: `nominal`, and `data` for CAN FD data phases."""

    nominal: int
    data: int | None = None


def database_bitrate(database: Database) -> BusBitrate | None:
    """The bitrate a database declares: DBC `BA_ "Baudrate"` (and `"BaudrateCANFD"`, each falling back
    to its `BA_DEF_DEF_` default), else the bus definition of ARXML/KCD files; None when it declares none.
    """
    dbc = database.dbc
    nominal = _dbc_attribute(dbc, "Baudrate") if dbc is not None else None
    data = _dbc_attribute(dbc, "BaudrateCANFD") if dbc is not None else None
    if nominal is None and len(database.buses) == 1:
        nominal = _positive(database.buses[0].baudrate)
        data = _positive(database.buses[0].fd_baudrate)
    return BusBitrate(nominal, data) if nominal is not None else None


def _dbc_attribute(dbc: object, name: str) -> int | None:
    attribute = getattr(dbc, "attributes", {}).get(name)
    if attribute is not None:
        return _positive(attribute.value)
    definition = getattr(dbc, "attribute_definitions", {}).get(name)
    return _positive(definition.default_value) if definition is not None else None


def _positive(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


@dataclass
class _ChannelTable:
    #: every message by (identifier, extended); J1939 messages too, so that an exact identifier wins
    by_id: dict[tuple[int, bool], Message] = field(default_factory=dict)
    #: J1939 messages by PGN: the fallback for identifiers no message defines
    by_pgn: dict[int, Message] = field(default_factory=dict)


@dataclass(frozen=True)
class PgnAmbiguity:
    """Two J1939 messages on one channel with the same PGN: `chosen` is the PGN fallback's pick."""

    channel: str | None
    pgn: int
    shadowed: Message
    chosen: Message

    def describe(self) -> str:
        where = "every channel" if self.channel is None else f"channel {self.channel}"
        return (
            f"J1939 PGN 0x{self.pgn:05X} is defined by {self.shadowed.name} (0x{self.shadowed.frame_id:08X})"
            f" and {self.chosen.name} (0x{self.chosen.frame_id:08X}) on {where}: each decodes its own"
            f" identifier; other source addresses decode as {self.chosen.name}"
        )


class Catalog:
    """Message definitions per channel, with a memoised `lookup(channel, frame_id, is_extended)`."""

    def __init__(self) -> None:
        self._tables: dict[str | None, _ChannelTable] = {}
        self._cache: KeyMemo[tuple[str | None, int, bool], Message | None] = KeyMemo()
        self._bitrates: dict[str | None, BusBitrate] = {}
        self.sources: list[DbcSpec] = []
        #: J1939 PGNs that more than one message on a channel defines (found by `add`)
        self.ambiguities: list[PgnAmbiguity] = []
        #: other names of bound channels (ASC/BLF channel numbers of the vehicle's buses): {alias: channel}
        self.aliases: dict[str, str] = {}

    @classmethod
    def from_specs(
        cls, specs: Iterable[str | DbcSpec], warn_stream: TextIO | Literal["stderr"] | None = "stderr"
    ) -> Catalog:
        """Load every `--dbc` spec; warnings about non-strict files go once each to `warn_stream`.

        The default is whatever `sys.stderr` is at the time of the call (None: no warnings).
        """
        catalog = cls()

        def warn(line: str) -> None:
            stream = sys.stderr if warn_stream == "stderr" else warn_stream
            if stream is not None:
                print(f"warning: {line}", file=stream)

        for spec in specs:
            parsed = spec if isinstance(spec, DbcSpec) else DbcSpec.parse(spec)
            catalog.add(load_database(parsed.path, warn), parsed.channel, warn=warn, origin=str(parsed.path))
            catalog.sources.append(parsed)
        return catalog

    def add(
        self,
        database: Database,
        channel: str | None = None,
        warn: Callable[[str], None] | None = None,
        origin: str = "database",
    ) -> None:
        """Bind a database to one channel, or to every channel when `channel` is None.

        J1939 messages are bound by exact identifier and by PGN; `warn` receives one line (prefixed with
        `origin`) for each PGN that two messages on the channel share, with the one the fallback picks.
        """
        table = self._tables.setdefault(channel, _ChannelTable())
        bitrate = database_bitrate(database)
        if bitrate is not None:
            self._bitrates.setdefault(channel, bitrate)  # merged databases: the first that declares one
        for message in database.messages:
            table.by_id[(message.frame_id, message.is_extended_frame)] = message
            if is_j1939(message):
                pgn = j1939_pgn(message.frame_id)
                previous = table.by_pgn.get(pgn)
                if previous is not None and previous is not message:
                    ambiguity = PgnAmbiguity(channel, pgn, previous, message)
                    self.ambiguities.append(ambiguity)
                    if warn is not None:
                        warn(f"{origin}: {ambiguity.describe()}")
                table.by_pgn[pgn] = message
        self._cache.clear()

    def alias(self, alias: str, channel: str) -> None:
        """Let frames seen on `alias` decode as if seen on `channel` (which must already be bound)."""
        self.aliases[alias] = channel
        self._cache.clear()

    def bitrate(self, channel: str | None) -> BusBitrate | None:
        """The bitrate declared by the databases bound to `channel` (else by those bound to every channel)."""
        if channel is not None:
            channel = self.aliases.get(channel, channel)
        return self._bitrates.get(channel) or self._bitrates.get(None)

    @property
    def channels(self) -> list[str | None]:
        """Channels with a database of their own (None stands for 'every channel')."""
        return list(self._tables)

    def messages(self, channel: str | None = None) -> list[Message]:
        """Every message definition visible on `channel` (its own databases, then the global ones)."""
        seen: dict[int, Message] = {}
        if channel is not None:
            channel = self.aliases.get(channel, channel)
        for key in (channel, None) if channel is not None else (None,):
            table = self._tables.get(key)
            if table is None:
                continue
            for message in table.by_id.values():
                seen.setdefault(id(message), message)
        return list(seen.values())

    def all_messages(self) -> list[tuple[str | None, Message]]:
        """Every (channel, message) binding in the catalog."""
        return [
            (channel, message) for channel, table in self._tables.items() for message in table.by_id.values()
        ]

    def lookup(self, channel: str | None, frame_id: int, is_extended: bool) -> Message | None:
        """The message definition for a frame, or None when no database on that channel knows it."""
        key = (channel, frame_id, is_extended)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for table_key in (self.aliases.get(channel, channel) if channel is not None else None, None):
            table = self._tables.get(table_key)
            if table is None:
                continue
            found = table.by_id.get((frame_id, is_extended))
            if found is None and is_extended and table.by_pgn:
                found = table.by_pgn.get(j1939_pgn(frame_id))
            if found is not None:
                break
        self._cache.remember(key, found)  # bounded: see decode.memo
        return found
