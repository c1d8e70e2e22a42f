"""The one place that reads cantools' private attributes (the fence around them).

Our decoders reproduce `Message.decode()` bit for bit, which needs two things cantools keeps private: a
message's codec tree (`Message._codecs`: the signals each multiplexer node unpacks together, and the
multiplexers that choose the child nodes) and the numeric conversion under a value table
(`NamedSignalConversion._conversion`). Nothing else in the project touches a cantools underscore name.

`pyproject.toml` bounds cantools at the newest version tested (45.1). Before raising the bound, run the
oracle test (`tests/unit/test_decode_oracle.py`, every DBC of the test data and the crafted cases against
`Message.decode`) with the new release: it is the tripwire for a change in these internals.
"""

from __future__ import annotations

from cantools.database.can import Message
from cantools.database.conversion import BaseConversion, NamedSignalConversion
from cantools.typechecking import Codec


def message_codec(message: Message) -> Codec:
    """`message`'s codec tree: `{"signals": [Signal], "formats": ..., "multiplexers": {name: {value:
    codec}}}`; `ValueError` when cantools has not built one."""
    codec: Codec | None = message._codecs
    if codec is None:
        raise ValueError(f"message {message.name} has no codec")
    return codec


def numeric_conversion(conversion: BaseConversion) -> BaseConversion:
    """The conversion cantools applies to a raw value that has no name in the value table (the
    conversion itself when it has no value table)."""
    if isinstance(conversion, NamedSignalConversion):
        inner: BaseConversion = conversion._conversion
        return inner
    return conversion
