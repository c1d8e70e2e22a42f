"""Reading a line-oriented capture in blocks of whole lines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from firmware_agent.io.frames import ReadStats

#: Bytes read per block: about 45 k candump lines; small blocks keep the working set in cache and
#: let the allocator reuse the same memory block after block.
DEFAULT_BLOCK_BYTES = 2 << 20


class LineBlocks:
    """Iterate over a binary stream in blocks of whole lines; every block ends with a newline.

    Readers number lines themselves (they split the block into lines anyway), so no pass here counts them.

    Pipes (`-`) are read with `read1` so that frames from a live `candump` come out as they arrive.
    `bytes_read` tells a progress bar how far the reader has got.
    """

    def __init__(self, stream: BinaryIO, block_bytes: int = DEFAULT_BLOCK_BYTES, head: bytes = b"") -> None:
        self._stream = stream
        self._block_bytes = block_bytes
        self._head = head
        self.bytes_read = 0

    def _read(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        read1 = getattr(self._stream, "read1", None)
        chunk: bytes = read1(self._block_bytes) if read1 is not None else self._stream.read(self._block_bytes)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        carry = b""
        while True:
            chunk = self._read()
            self.bytes_read += len(chunk)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1 :]
            yield block
        if carry:
            yield carry + b"\n"


class LineReader:
    """The common state of a line-oriented capture reader: its blocks, its name, what it skipped."""

    #: Bytes per block when the caller does not choose.
    block_bytes = DEFAULT_BLOCK_BYTES

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        stats: ReadStats,
        strict: bool = False,
        block_bytes: int | None = None,
        head: bytes = b"",
    ) -> None:
        self.name = name
        self.stats = stats
        self.strict = strict
        self._blocks = LineBlocks(stream, block_bytes or self.block_bytes, head)

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (for progress)."""
        return self._blocks.bytes_read
