"""walb's wire protocol, the part the keeper asks in: `get`, `status` and `version` as walbc
asks them.

Pure: bytes in, bytes out; the caller owns the socket. Written from walb-tools v1.0.19's
sources (the contract, not a copy):
- values go through cybozu's serializer (cybozulib/include/cybozu/serializer.hpp): an integer
  is one byte when it fits a signed byte outside -128..-121, else a header byte (0x80 u8,
  0x81 u16, 0x82 u32, 0x83 u64, 0x84 i8, 0x85 i16, 0x86 i32, 0x87 i64) and the value, little
  endian; a string is its length (an integer) and its bytes; a string vector its count and
  its strings;
- the first negotiation (src/protocol.cpp, run1stNegotiateAsClient/AsServer): the client
  sends its id, the protocol name (`get`) and packet VERSION 1 (src/packet.hpp); the server
  answers its node id, then `ok` once it has a handler for the protocol (or an error text);
- `get` (runGetCommandServer): the client sends the parameters as a string vector
  (`["host-type"]`), the server answers `ok` or an error text, then the value (a string for
  host-type) and the acknowledgement 0x626c6177 ("walb" little endian);
- `status [VOL]` (c2?StatusServer) is the same with a string vector for its value;
  `version` (versionServer) sends no parameters and answers one string, then waits for the
  client to close (packet.hpp writeFin), no acknowledgement.

The keeper probes and scans through this instead of a walbc process per question: a process
costs a few milliseconds of CPU, a group's probes run four times a second per server and a
scan asks a few questions per volume.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

PACKET_VERSION = 1
ACK = 0x626C6177
OK = "ok"
# header byte -> (struct format, size) of the integer that follows it
_INT_HEADERS = {0x80: ("<B", 1), 0x81: ("<H", 2), 0x82: ("<I", 4), 0x83: ("<Q", 8),
                0x84: ("<b", 1), 0x85: ("<h", 2), 0x86: ("<i", 4), 0x87: ("<q", 8)}
MAX_STRING = 1 << 16  # nothing a prober reads is longer: a bigger length is not walb talking

Read = Callable[[int], bytes]  # returns exactly n bytes, or fewer at the end of the stream


class WireError(ValueError):
    """The peer did not answer in walb's protocol (or said no: the message says which)."""


def encode_int(value: int) -> bytes:
    """As saveVariableInt writes a signed 64-bit value: -128..-121 take the i8 header (their
    bare byte would read as a header), anything beyond 32 bits goes as u64 (two's complement
    when negative): the serializer never writes 0x87.  (An unsigned C++ value near its
    type's maximum, such as a size_t of 2**64 - 1, is written shorter there, as the negative
    number it casts to; nothing a prober sends is one.)"""
    if not -(1 << 63) <= value < 1 << 64:
        raise ValueError(f"{value} does not fit walb's 64-bit integers")
    if -128 <= value <= 127:
        return (b"\x84" if value <= -121 else b"") + struct.pack("<b", value)
    if 0 <= value <= 0xFF:
        return b"\x80" + struct.pack("<B", value)
    for header, fmt, low, high in ((0x81, "<H", 0, 0xFFFF), (0x85, "<h", -0x8000, 0x7FFF),
                                   (0x82, "<I", 0, 0xFFFFFFFF),
                                   (0x86, "<i", -0x80000000, 0x7FFFFFFF)):
        if low <= value <= high:
            return bytes([header]) + struct.pack(fmt, value)
    return b"\x83" + struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def encode_str(text: str) -> bytes:
    data = text.encode()
    return encode_int(len(data)) + data


def encode_strs(items: list[str]) -> bytes:
    return encode_int(len(items)) + b"".join(encode_str(s) for s in items)


def _exactly(read: Read, n: int) -> bytes:
    data = read(n)
    if len(data) != n:
        raise WireError(f"the connection ended {n - len(data)} bytes early")
    return data


def decode_int(read: Read) -> int:
    head = _exactly(read, 1)[0]
    if head in _INT_HEADERS:
        fmt, size = _INT_HEADERS[head]
        value: int = struct.unpack(fmt, _exactly(read, size))[0]
        return value
    return int(struct.unpack("<b", bytes([head]))[0])


def decode_str(read: Read) -> str:
    size = decode_int(read)
    if not 0 <= size <= MAX_STRING:
        raise WireError(f"a string of {size} bytes is not walb's protocol")
    return _exactly(read, size).decode(errors="replace")


# What each question's value is on the wire (src/controller.cpp getGetCommandInfoMap; status
# and version from src/*.cpp c2?StatusServer and protocol.cpp versionServer): the keeper's.
SIZE, STRING, STRINGS = "size", "string", "strings"
GET_TYPES = {"host-type": STRING, "vol": STRINGS, "state": STRING, "is-overflow": SIZE,
             "is-wdiff-send-error": SIZE, "num-action": SIZE, "restorable": STRINGS,
             "ts-delta": STRINGS, "base-all": STRINGS, "all-actions": STRINGS, "pid": SIZE}
# walbc's client function per protocol, which its error messages name first
CLIENT_FUNCTION = {"get": "c2xGetClient", "status": "c2xGetStrVecClient"}


class RefusedError(Exception):
    """The server understood and said no; `text` is what it said (walbc prints it after
    'ERROR walbc error: ' and its client function)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def request(client_id: str, args: list[str]) -> bytes:
    """Everything a client sends for walbc ARGS (`get TARGET ...`, `status [VOL]`,
    `version`): the server reads the parameters only after it has answered the
    negotiation, so sending them at once is the same."""
    protocol, params = args[0], args[1:]
    if protocol not in ("get", "status", "version"):
        raise ValueError(f"not a question this client asks: {protocol}")
    if protocol == "get" and (not params or params[0] not in GET_TYPES):
        raise ValueError(f"not a get target this client knows: {' '.join(params)}")
    out = encode_str(client_id) + encode_str(protocol) + encode_int(PACKET_VERSION)
    if protocol != "version":
        out += encode_strs(params)
    return out


def read_answer(read: Read, args: list[str]) -> str:
    """The answer to request(..., ARGS), printed as walbc prints it (a line per value).
    Raises RefusedError for walb's no, WireError when the peer does not speak walb."""
    node = decode_str(read)
    said = decode_str(read)
    if said != OK:  # no handler for the protocol: nothing more comes
        raise RefusedError(said)
    protocol = args[0]
    if protocol == "version":  # versionServer writes the description and waits for close
        return decode_str(read) + "\n"
    said = decode_str(read)
    if said != OK:
        raise RefusedError(said)
    kind = STRINGS if protocol == "status" else GET_TYPES[args[1]]
    if kind == STRINGS:
        count = decode_int(read)
        if not 0 <= count <= MAX_STRING:
            raise WireError(f"{node}: a list of {count} values is not walb's protocol")
        text = "".join(decode_str(read) + "\n" for _ in range(count))
    elif kind == SIZE:
        text = f"{decode_int(read)}\n"
    else:
        text = decode_str(read) + "\n"
    ack = decode_int(read)
    if ack != ACK:
        raise WireError(f"no acknowledgement after the value (got {ack:#x})")
    return text


def walbc_error(args: list[str], refused: RefusedError) -> str:
    """The line walbc prints for a refusal, e.g. 'ERROR walbc error:
    c2xGetClient:isOverflow:bad state:Clear' (binsrc/walbc.cpp, cybozu::Exception)."""
    function = CLIENT_FUNCTION.get(args[0])
    return "ERROR walbc error: " + (f"{function}:" if function else "") + refused.text


def host_type_request(client_id: str) -> bytes:
    return request(client_id, ["get", "host-type"])


def read_host_type(read: Read) -> tuple[str, str]:
    """(server node id, host type) from the server's answer to host_type_request."""
    node = decode_str(read)
    for step in ("negotiation", "get host-type"):
        said = decode_str(read)
        if said != OK:
            raise WireError(f"{node or 'the server'} refused the {step}: {said}")
    host_type = decode_str(read)
    ack = decode_int(read)
    if ack != ACK:
        raise WireError(f"no acknowledgement after the value (got {ack:#x})")
    return node, host_type
