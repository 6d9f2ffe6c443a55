"""walb's wire protocol as the keeper speaks it (walbctr/walb/wire.py): the bytes, by hand
from upstream's serializer and protocol sources, and the answers read as walbc prints them."""

from __future__ import annotations

import io

import pytest

from walbctr.walb import wire


def reader(data: bytes) -> wire.Read:
    return io.BytesIO(data).read


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (5, "05"), (127, "7f"), (-1, "ff"), (-120, "88"),
    (-121, "8487"), (-128, "8480"),  # bytes that are headers go under the i8 header
    (128, "8080"), (255, "80ff"), (256, "810001"), (-200, "8538ff"),
    (70000, "8270110100"), (0x626C6177, "827761 6c62".replace(" ", "")),
    (1 << 40, "830000000000010000"),
])
def test_integers_are_encoded_byte_for_byte_as_cybozus_serializer_and_read_back(
        value: int, encoded: str) -> None:
    assert wire.encode_int(value).hex() == encoded
    assert wire.decode_int(reader(bytes.fromhex(encoded))) == value


def test_a_get_request_is_the_negotiation_then_the_parameters_as_a_string_vector() -> None:
    sent = wire.request("walb-keeper", ["get", "state", "vol0"])
    assert sent == (b"\x0bwalb-keeper" b"\x03get" b"\x01"  # client id, protocol, VERSION 1
                    b"\x02" b"\x05state" b"\x04vol0")


def test_version_sends_no_parameters_and_unknown_questions_are_refused_before_sending() -> None:
    assert wire.request("k", ["version"]) == b"\x01k\x07version\x01"
    with pytest.raises(ValueError, match="not a get target"):
        wire.request("k", ["get", "no-such-target"])
    with pytest.raises(ValueError, match="not a question"):
        wire.request("k", ["kick"])


def answer(*parts: bytes) -> bytes:
    return b"".join(parts)


def s(text: str) -> bytes:
    return wire.encode_str(text)


ACK = wire.encode_int(wire.ACK)


def test_answers_read_as_walbc_prints_them_per_value_type() -> None:
    head = s("p0") + s("ok") + s("ok")
    assert wire.read_answer(reader(head + s("proxy") + ACK), ["get", "host-type"]) == "proxy\n"
    assert wire.read_answer(reader(head + wire.encode_int(1) + ACK),
                            ["get", "is-overflow", "v"]) == "1\n"
    assert wire.read_answer(reader(head + wire.encode_strs(["v0", "v1"]) + ACK),
                            ["get", "vol"]) == "v0\nv1\n"
    assert wire.read_answer(reader(head + wire.encode_strs([]) + ACK), ["get", "vol"]) == ""
    assert wire.read_answer(reader(s("p0") + s("ok") + s("version:1.0.19")),
                            ["version"]) == "version:1.0.19\n"


def test_a_refusal_is_walbs_text_with_walbcs_prefix() -> None:
    refused = s("p0") + s("ok") + s("isOverflow:bad state:Clear")
    with pytest.raises(wire.RefusedError) as caught:
        wire.read_answer(reader(refused), ["get", "is-overflow", "v"])
    assert wire.walbc_error(["get", "is-overflow", "v"], caught.value) == \
        "ERROR walbc error: c2xGetClient:isOverflow:bad state:Clear"


@pytest.mark.parametrize("garbage", [
    b"", b"\x05ab",  # cut off
    b"HTTP/1.1 400 Bad Request\r\n\r\n",  # another protocol: 'H' is a 72-byte string
    s("p0") + s("ok") + s("ok") + s("proxy") + wire.encode_int(7),  # no acknowledgement
])
def test_what_is_not_walb_talking_is_a_wire_error(garbage: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.read_answer(reader(garbage), ["get", "host-type"])
