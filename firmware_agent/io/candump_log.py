"""candump `-L` logs (`(1533226487.000018) can0 2E4#BE000000A9`), parsed a block at a time with numpy.

This is the hot path of `firmware-agent decode`, so the common line shape (six-digit fraction, one space
between fields, classic or CAN FD data) is parsed for a whole block at once by locating the separators
with numpy. Anything else (remote frames, other timestamp precisions, odd spacing) goes through
`parse_line`, a per-line parser that accepts what python-can's `CanutilsLogReader` accepts and also CAN FD
flag nibbles written as hex letters (`123##F11`), which python-can 4.6.1 parses base 10 and rejects.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from firmware_agent.errors import UserError
from firmware_agent.io.frames import FrameBatch
from firmware_agent.io.text import LineReader

_CAN_ERR_FLAG = 0x20000000
_CAN_ERR_BUSERROR = 0x80
_CANFD_BRS = 0x01
#: Data bytes of the longest frame (CAN FD); a longer line is malformed, not a frame (a 32 KB line
#: overflowed the decoder's row arrays, issue 12).
MAX_DATA_BYTES = 64

_HEX = np.full(256, 255, np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX[_char] = _value
for _value, _char in enumerate(b"ABCDEF"):
    _HEX[_char] = 10 + _value
_DIGIT = np.full(256, 255, np.uint8)
_DIGIT[48:58] = np.arange(10, dtype=np.uint8)


class Frame(NamedTuple):
    """One frame parsed from a single line."""

    timestamp: float
    channel: str
    arbitration_id: int
    is_extended: bool
    is_fd: bool
    is_remote: bool
    is_error: bool
    data: bytes
    bitrate_switch: bool = False


def parse_line(line: bytes) -> Frame | None:
    """Parse one candump `-L` line; None for a blank line, ValueError when it is malformed."""
    parts = line.split()
    if not parts:
        return None
    if len(parts) == 4 and parts[3].lower() in (b"r", b"t"):
        parts = parts[:3]
    if len(parts) != 3:
        raise ValueError("expected '(TIMESTAMP) CHANNEL ID#DATA'")
    stamp, channel, frame = parts
    if not (stamp.startswith(b"(") and stamp.endswith(b")")):
        raise ValueError("timestamp is not in parentheses")
    timestamp = float(stamp[1:-1])
    id_text, separator, payload = frame.partition(b"#")
    if not separator or not id_text or len(id_text) > 8:
        raise ValueError("expected ID#DATA")
    arbitration_id = int(id_text, 16)
    is_fd = payload.startswith(b"#")
    flags = 0
    if is_fd:
        flags = int(payload[1:2] or b"x", 16)  # the flags nibble, 0-F (bit 0: BRS)
        payload = payload[2:]
    is_remote = payload[:1] in (b"R", b"r")
    if is_remote:
        if len(payload) > 1:
            int(payload[1:])
        data = b""
    else:
        if len(payload) % 2:
            raise ValueError("odd number of hex digits")
        if len(payload) > 2 * MAX_DATA_BYTES:
            raise ValueError(f"{len(payload) // 2} data bytes, more than a CAN frame's {MAX_DATA_BYTES}")
        data = bytes.fromhex(payload.decode("ascii"))
    is_error = bool(arbitration_id & _CAN_ERR_FLAG and arbitration_id & _CAN_ERR_BUSERROR)
    return Frame(
        timestamp=timestamp,
        channel=channel.decode("utf-8", "replace"),
        arbitration_id=arbitration_id & 0x1FFFFFFF,
        is_extended=len(id_text) > 3,
        is_fd=is_fd,
        is_remote=is_remote,
        is_error=is_error,
        data=data,
        bitrate_switch=bool(flags & _CANFD_BRS),
    )


class CandumpLogReader(LineReader):
    """Batches of frames from a candump `-L` log; malformed lines are counted (or fatal with `strict`)."""

    format_name = "candump -L"

    def __iter__(self) -> Iterator[FrameBatch]:
        first_line = 1
        for block in self._blocks:
            buf = np.frombuffer(block, np.uint8)
            newlines = np.flatnonzero(buf == 10)
            batch = self.parse_block(block, first_line, newlines)
            first_line += len(newlines)
            if len(batch):
                yield batch

    def parse_block(self, block: bytes, first_line: int, newlines: np.ndarray | None = None) -> FrameBatch:
        """Parse a block of whole lines (ending with a newline) whose first line is `first_line`.

        `newlines`: the offsets of the block's newlines, if the caller has them already.
        """
        buf = np.frombuffer(block, np.uint8)
        if newlines is None:
            newlines = np.flatnonzero(buf == 10)
        starts = np.concatenate(([0], newlines[:-1] + 1))
        ends = newlines - ((buf[np.maximum(newlines - 1, 0)] == 13) & (newlines > starts))
        fast = _parse_fast(block, starts, ends)
        rows = len(starts)
        ok = fast.ok
        slow_rows = np.flatnonzero(~ok & (ends > starts))
        keep = ok.copy()
        channel_names = list(fast.channels)
        slow: list[tuple[int, Frame]] = []
        for row in slow_rows.tolist():
            text = block[starts[row] : ends[row]]
            try:
                frame = parse_line(text)
            except ValueError:
                line_number = first_line + row
                if self.strict:
                    shown = text.decode("utf-8", "replace")[:80]
                    raise UserError(f"{self.name}:{line_number}: malformed candump line: {shown!r}") from None
                self.stats.add_malformed(line_number)
                continue
            if frame is not None:
                slow.append((row, frame))
                keep[row] = True
        width = max([fast.data.shape[1], *(len(f.data) for _, f in slow)])
        data = fast.data
        if width > data.shape[1]:
            data = np.zeros((rows, width), np.uint8)
            data[:, : fast.data.shape[1]] = fast.data
        channel = fast.channel
        for row, frame in slow:
            if frame.channel not in channel_names:
                channel_names.append(frame.channel)
            channel[row] = channel_names.index(frame.channel)
            fast.timestamp[row] = frame.timestamp
            fast.arbitration_id[row] = frame.arbitration_id
            fast.is_extended[row] = frame.is_extended
            fast.is_fd[row] = frame.is_fd
            fast.is_remote[row] = frame.is_remote
            fast.is_error[row] = frame.is_error
            fast.length[row] = len(frame.data)
            fast.bitrate_switch[row] = frame.bitrate_switch
            data[row, : len(frame.data)] = np.frombuffer(frame.data, np.uint8)
            data[row, len(frame.data) :] = 0
        select = slice(None) if keep.all() else keep  # usually every line is a frame: no copies
        return FrameBatch(
            timestamp=fast.timestamp[select],
            channel=channel[select],
            channels=channel_names,
            arbitration_id=fast.arbitration_id[select],
            is_extended=fast.is_extended[select],
            is_fd=fast.is_fd[select],
            is_remote=fast.is_remote[select],
            is_error=fast.is_error[select],
            length=fast.length[select],
            data=data[select],
            bitrate_switch=fast.bitrate_switch[select],
        )


class _FastParse(NamedTuple):
    ok: np.ndarray
    timestamp: np.ndarray
    channel: np.ndarray
    channels: list[str]
    arbitration_id: np.ndarray
    is_extended: np.ndarray
    is_fd: np.ndarray
    is_remote: np.ndarray
    is_error: np.ndarray
    length: np.ndarray
    data: np.ndarray
    bitrate_switch: np.ndarray


#: Window columns when a line's window is aligned so that its ')' sits at `_CLOSE`.
_CLOSE = 18
_CHANNEL = _CLOSE + 2
_WINDOW = 64
#: Columns of the 16 digits of '(SSSSSSSSSS.UUUUUU)' in that window.
_STAMP_COLUMNS = np.r_[1:11, 12:18]
#: Window columns when aligned so that '#' after the identifier sits at `_HASH`.
_HASH = 8
_FRAME_WINDOW = 32
_RT = np.zeros(256, bool)
_RT[list(b"RrTt")] = True
_ZERO = np.uint8(48)
#: Eight ASCII '0's in a 64-bit word, and masks keeping the lowest / highest k bytes of a word (k = 0..8).
_ZEROS_WORD = np.uint64(0x3030303030303030)
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)
_HIGH_BYTES = np.array([((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(9)], np.uint64)


class _Head(NamedTuple):
    """'(SECONDS.MICROS) CHANNEL ID#' of every line: where each line's '#' is, and what precedes it."""

    ok: np.ndarray
    timestamp: np.ndarray
    channels: list[str]
    channel: np.ndarray
    id_length: np.ndarray
    hash_at: np.ndarray


def _parse_fast(block: bytes, starts: np.ndarray, ends: np.ndarray) -> _FastParse:
    """Parse every line of the usual shape at once; `ok` marks the rows it could parse.

    Each line's head ('(SECONDS.MICROS) CHANNEL ID#') is parsed either at fixed columns, when every
    line of the block has the first line's field widths (`_uniform_head`, the usual case), or from a
    64-byte window aligned on the line's ')' (`_aligned_head`). Then a window aligned on its '#' puts
    the ID and payload at fixed columns; hex goes through `binascii.unhexlify`.
    """
    count = len(starts)
    if len(block) < _WINDOW:
        block += bytes(_WINDOW)  # the last windows must exist (tail lines are sent to the slow path)
    buf = np.frombuffer(block, np.uint8)
    frames = sliding_window_view(buf, _FRAME_WINDOW)
    last_window = len(buf) - _WINDOW
    last_byte = len(buf) - 1
    head = _uniform_head(buf, starts, ends) or _aligned_head(buf, starts, ends)
    ok, timestamp, names, channel, id_length, hash_at = head

    # 'ID#DATA' or 'ID##FDATA', optionally followed by ' R' or ' T'
    ok &= hash_at - _HASH <= last_window
    frame = frames[np.where(ok, hash_at - _HASH, 0)]
    # the ID's digits end at the '#': keep the last id_length bytes of the 8 before it, '0' elsewhere
    id_text = _zero_fill(np.ascontiguousarray(frame[:, :_HASH]).view("<u8"), _HIGH_BYTES, id_length)
    raw_id, id_ok = _unhex(id_text.view(np.uint8), copy=False)
    ok &= id_ok
    raw_id = raw_id.view(">u4").ravel().astype(np.uint32)
    is_fd = frame[:, _HASH + 1] == ord("#")
    fd_flags = _HEX[frame[:, _HASH + 2]]
    ok &= ~is_fd | (fd_flags < 16)
    any_fd = bool(is_fd.any())
    data_start = hash_at + np.where(is_fd, 3, 1) if any_fd else hash_at + 1
    trailer = (buf[np.maximum(ends - 2, 0)] == 32) & _RT[buf[np.maximum(ends - 1, 0)]]
    characters = ends - np.where(trailer, 2, 0) - data_start
    ok &= (characters >= 0) & (characters % 2 == 0) & (characters <= 128)
    first = buf[np.minimum(data_start, last_byte)]
    ok &= ~(((first == ord("R")) | (first == ord("r"))) & (characters > 0))  # remote frames: slow path
    length = np.where(ok, characters // 2, 0).astype(np.int16)

    # payload: up to 8 bytes from the aligned window, longer CAN FD payloads gathered on their own
    if any_fd:
        hex_text = np.where(
            is_fd[:, None], frame[:, _HASH + 3 : _HASH + 19], frame[:, _HASH + 1 : _HASH + 17]
        )
    else:
        hex_text = np.ascontiguousarray(frame[:, _HASH + 1 : _HASH + 17])
    # hide what follows a short payload ('0' is harmless hex), one 64-bit word (8 characters) at a time
    digits = 2 * length.astype(np.int64)
    words = hex_text.view("<u8")
    hex_text = np.stack(
        [
            _zero_fill(words[:, 0], _LOW_BYTES, np.clip(digits, 0, 8)),
            _zero_fill(words[:, 1], _LOW_BYTES, np.clip(digits - 8, 0, 8)),
        ],
        axis=1,
    ).view(np.uint8)
    data, data_ok = _unhex(hex_text)
    ok &= data_ok
    long_rows = np.flatnonzero(ok & (length > 8))
    if len(long_rows):
        data = _long_payloads(buf, data, long_rows, data_start[long_rows], length, ok)

    length[~ok] = 0
    return _FastParse(
        ok=ok,
        timestamp=timestamp,
        channel=channel,
        channels=names,
        arbitration_id=raw_id & 0x1FFFFFFF,
        is_extended=id_length > 3,
        is_fd=is_fd,
        is_remote=np.zeros(count, bool),
        is_error=((raw_id & _CAN_ERR_FLAG) != 0) & ((raw_id & _CAN_ERR_BUSERROR) != 0),
        length=length,
        data=data,
        bitrate_switch=is_fd & ((fd_flags & _CANFD_BRS) != 0),
    )


def _uniform_head(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _Head | None:
    """The heads of a block whose lines all have the first line's field widths (ten integer digits of
    seconds, one channel name length up to 8, one ID length), read at fixed columns; else None.
    """
    if not len(starts):
        return None
    first = bytes(buf[starts[0] : min(ends[0], starts[0] + _CHANNEL + 18)])
    channel_length = first.find(b" ", _CHANNEL) - _CHANNEL
    hash_offset = first.find(b"#", _CHANNEL + channel_length + 1)
    id_length = hash_offset - (_CHANNEL + channel_length + 1)
    if not (first.startswith(b"(") and first[_CLOSE : _CLOSE + 2] == b") "):
        return None
    if not (1 <= channel_length <= 8 and 1 <= id_length <= 8):
        return None
    if int((ends - starts).min()) <= hash_offset:
        return None
    # each line's first 32 bytes (the block zero-padded so that the last line has them too)
    line = sliding_window_view(np.concatenate([buf, np.zeros(32, np.uint8)]), 32)[starts]
    shape = (line[:, 0] == ord("(")) & (line[:, 11] == ord(".")) & (line[:, _CLOSE] == ord(")"))
    shape &= (line[:, _CLOSE + 1] == 32) & (line[:, _CHANNEL + channel_length] == 32)
    shape &= buf[starts + hash_offset] == ord("#")
    if not shape.all():
        return None
    names_text = line[:, _CHANNEL : _CHANNEL + 8]
    if (names_text[:, :channel_length] <= 32).any():  # whitespace inside: not one field
        return None
    words, ok = _decimal8(line[:, _STAMP_COLUMNS])
    micros = words[:, 0] * np.uint64(100_000_000) + words[:, 1]
    ok &= micros < np.uint64(1 << 53)
    count = len(starts)
    names, channel = _channel_codes(names_text, np.full(count, channel_length), ok)
    return _Head(
        ok, micros.astype(np.float64) / 1e6, names, channel, np.full(count, id_length), starts + hash_offset
    )


def _aligned_head(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _Head:
    """The heads of lines of any shape candump or python-can write, through windows aligned on ')'."""
    windows = sliding_window_view(buf, _WINDOW)
    last_window = len(buf) - _WINDOW
    last_byte = len(buf) - 1
    # Align each line's window on its ')': candump writes ten integer digits, python-can fewer.
    close = starts + _CLOSE
    elsewhere = np.flatnonzero(buf[np.minimum(close, last_byte)] != ord(")"))
    if len(elsewhere):
        closings = np.flatnonzero(buf == ord(")"))
        close[elsewhere] = np.append(closings, len(buf) - _WINDOW)[
            np.searchsorted(closings, starts[elsewhere])
        ]
    close_offset = close - starts
    ok = (buf[starts] == ord("(")) & (close_offset >= 9) & (close_offset <= _CLOSE) & (close < ends)
    ok &= close - _CLOSE <= last_window
    line = windows[np.clip(close - _CLOSE, 0, last_window)]

    # (SECONDS.MICROS): the exact count of microseconds (below 2**53) divided by 1e6 is one correctly
    # rounded division, so it is the same double as float(text).
    digits = line[:, _STAMP_COLUMNS]
    short = np.flatnonzero(close_offset < _CLOSE)
    if len(short):
        hidden = np.arange(10) < (_CLOSE - close_offset[short])[:, None]  # columns left of the first digit
        digits[short, :10] = np.where(hidden, _ZERO, digits[short, :10])
    words, digits_ok = _decimal8(digits)
    ok &= (line[:, 11] == ord(".")) & digits_ok
    micros = words[:, 0] * np.uint64(100_000_000) + words[:, 1]
    ok &= micros < np.uint64(1 << 53)
    timestamp = micros.astype(np.float64) / 1e6

    # ' CHANNEL ID#'
    ok &= line[:, _CLOSE + 1] == 32
    after = line[:, _CHANNEL : _CHANNEL + 32]
    channel_length, id_length = _field_lengths(after)
    hash_offset = channel_length + 1 + id_length
    ok &= (channel_length >= 1) & (id_length >= 1) & (id_length <= 8)
    hash_at = close + 2 + hash_offset
    names, channel = _channel_codes(after[:, :16], channel_length, ok)
    return _Head(ok, timestamp, names, channel, id_length, hash_at)


def _field_lengths(after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths of 'CHANNEL' and 'ID' in rows starting 'CHANNEL ID#'.

    A capture mostly repeats a few channel names and uses 3- or 8-digit IDs, so the first row's
    channel length is tried for every row first; only rows that do not fit are searched.
    """
    count = len(after)
    channel_length = np.full(count, -1, np.int64)
    id_length = np.full(count, -1, np.int64)
    if not count:
        return channel_length, id_length
    first = bytes(after[0, :16]).find(b" ")
    if first > 0:
        fits = (after[:, first] == 32) & ~np.any(after[:, :first] == 32, axis=1)
        for digits in (3, 8):
            found = fits & (after[:, first + 1 + digits] == ord("#")) & (id_length < 0)
            id_length[found] = digits
        channel_length[id_length > 0] = first
    rest = np.flatnonzero(id_length < 0)
    if len(rest):
        searched = after[rest]
        channel_length[rest] = _first_per_row(searched[:, :16] == 32)  # names up to 15 characters here
        id_length[rest] = _first_per_row(searched == ord("#")) - channel_length[rest] - 1
    return channel_length, id_length


def _any_per_row(flags: np.ndarray) -> np.ndarray:
    """Row-wise any() of a C-contiguous bool matrix whose width is a multiple of 8, 8 flags per word."""
    words = np.ascontiguousarray(flags).view(np.uint64)
    nonzero: np.ndarray = np.bitwise_or.reduce(words, axis=1) != 0 if words.shape[1] > 1 else words[:, 0] != 0
    return nonzero


def _first_per_row(flags: np.ndarray) -> np.ndarray:
    """Column of the first True per row of a bool matrix (width a multiple of 8); -1 when none."""
    words = np.ascontiguousarray(flags).view(np.uint64)
    result = np.full(len(words), -1, np.int64)
    found = np.zeros(len(words), bool)
    for column in range(words.shape[1]):
        word = words[:, column]
        lowest = word & (~word + np.uint64(1))  # isolate the lowest set byte's bit
        here = (lowest != 0) & ~found
        byte = np.log2(np.where(here, lowest, 1).astype(np.float64)).astype(np.int64) // 8
        result = np.where(here, 8 * column + byte, result)
        found |= here
    return result


def _decimal8(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ASCII decimal digits, eight per 64-bit word (first digit most significant), as numbers.

    Also says per row whether every byte was a digit: a byte below '0' sets its top bit when '0' is
    subtracted, one above '9' when 0x46 is added, and non-ASCII bytes have it set already.
    """
    text = np.ascontiguousarray(digits).view("<u8")
    words = text - np.uint64(0x3030303030303030)
    high = np.uint64(0x8080808080808080)
    invalid = (text | words | (text + np.uint64(0x4646464646464646))) & high
    valid = (invalid[:, 0] | invalid[:, 1]) == 0  # two words: the 16 digits of a timestamp
    words = (words * np.uint64(10) + (words >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    words = (words * np.uint64(100) + (words >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (words * np.uint64(10000) + (words >> np.uint64(32))) & np.uint64(0xFFFFFFFF), valid


def _zero_fill(words: np.ndarray, masks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Text words with the bytes outside `masks[keep]` (per row) replaced by ASCII '0'."""
    mask = masks[np.clip(keep, 0, 8)].reshape(words.shape)
    filled: np.ndarray = (words & mask) | (_ZEROS_WORD & ~mask)
    return filled


def _unhex(text: np.ndarray, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Hex text rows (even width) to byte rows, and which rows were valid hex (`copy`: writable)."""
    rows, width = text.shape
    try:
        raw = binascii.unhexlify(np.ascontiguousarray(text).tobytes())
        values = np.frombuffer(raw, np.uint8).reshape(rows, width // 2)
        return values.copy() if copy else values, np.ones(rows, bool)
    except (binascii.Error, ValueError):
        nibbles = _HEX[text]
        valid = ~_any_per_row(nibbles > 15) if width % 8 == 0 else np.all(nibbles < 16, axis=1)
        nibbles = np.where(valid[:, None], nibbles, 0)
        return ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8), valid


def _long_payloads(
    buf: np.ndarray,
    data: np.ndarray,
    rows: np.ndarray,
    starts: np.ndarray,
    length: np.ndarray,
    ok: np.ndarray,
) -> np.ndarray:
    """Widen `data` and fill the CAN FD payloads longer than 8 bytes (marking bad hex as not ok)."""
    counts = length[rows].astype(np.int64)
    wide = np.zeros((len(data), int(counts.max())), np.uint8)
    wide[:, :8] = data
    row_of = np.repeat(rows, counts)
    column = np.arange(len(row_of)) - np.repeat(np.cumsum(counts) - counts, counts)
    position = np.repeat(starts, counts) + 2 * column
    high, low = _HEX[buf[position]], _HEX[buf[position + 1]]
    ok[row_of[(high | low) >= 16]] = False
    wide[row_of, column] = (high << 4) | low
    return wide


def _channel_codes(text: np.ndarray, length: np.ndarray, ok: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Number the distinct channel names (few per capture) without sorting every row."""
    if ok.any() and (length[ok] == length[ok][0]).all() and length[ok][0] <= 8:
        # one name length up to 8 bytes (can0, can1, vcan0): one masked 64-bit word per row
        size = int(length[ok][0])
        word = np.ascontiguousarray(text[:, :8]).view("<u8").ravel() & np.uint64((1 << (8 * size)) - 1)
        words = np.stack([word, np.zeros_like(word)], axis=1)
        masked = text
    else:
        masked = np.where(np.arange(16) < length[:, None], text, np.uint8(0))
        words = masked.view("<u8")  # two 64-bit words per name
    codes = np.zeros(len(text), np.int32)
    pending = ok.copy()
    names: list[str] = []
    while pending.any():
        row = int(np.argmax(pending))
        same = pending & (words[:, 0] == words[row, 0]) & (words[:, 1] == words[row, 1])
        codes[same] = len(names)
        names.append(bytes(masked[row, : length[row]]).decode("utf-8", "replace"))
        pending &= ~same
    return names, codes
