"""COSE_Sign1 signing, checked against pycose (an independent implementation) in both directions."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from firmware_agent.telemetry.cose import (
    BadSignatureError,
    MalformedMessageError,
    Signer,
    UnknownKidError,
    WrongAlgorithmError,
    verify_sign1,
)
from firmware_agent.telemetry.keys import kid_of

TOPIC = "vehicles/veh-0001/telemetry"


def _raw(key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    d = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return d, x


def test_our_message_verifies_with_pycose_and_is_bound_to_the_topic() -> None:
    key = Ed25519PrivateKey.generate()
    message = Signer(key).sign(b"payload", TOPIC)
    assert cbor2.loads(message).tag == 18
    decoded = Sign1Message.decode(message)
    assert decoded.phdr[Algorithm] is EdDSA and decoded.phdr[KID] == kid_of(key.public_key())
    decoded.key = OKPKey(crv=Ed25519, x=_raw(key)[1])
    decoded.external_aad = TOPIC.encode()  # type: ignore[misc]  # settable at run time
    assert decoded.verify_signature()
    assert decoded.payload == b"payload"
    decoded = Sign1Message.decode(message)
    decoded.key = OKPKey(crv=Ed25519, x=_raw(key)[1])
    decoded.external_aad = b"vehicles/veh-0002/telemetry"  # type: ignore[misc]  # settable at run time
    assert not decoded.verify_signature()


def test_pycose_message_verifies_with_ours() -> None:
    key = Ed25519PrivateKey.generate()
    d, x = _raw(key)
    kid = kid_of(key.public_key())
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid}, payload=b"hello", external_aad=TOPIC.encode())
    msg.key = OKPKey(crv=Ed25519, d=d, x=x)
    assert verify_sign1(msg.encode(), TOPIC, {kid: key.public_key()}) == b"hello"


def test_kid_is_sha256_prefix_of_the_raw_public_key() -> None:
    import hashlib

    key = Ed25519PrivateKey.generate()
    assert kid_of(key.public_key()) == hashlib.sha256(_raw(key)[1]).digest()[:8]


def test_each_failure_has_its_own_error() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signer = Signer(key)
    keys = {signer.kid: key.public_key()}
    message = signer.sign(b"payload", TOPIC)
    with pytest.raises(BadSignatureError):
        verify_sign1(message, "vehicles/veh-0002/telemetry", keys)
    with pytest.raises(UnknownKidError):
        verify_sign1(message, TOPIC, {kid_of(other.public_key()): other.public_key()})
    with pytest.raises(BadSignatureError):
        verify_sign1(message, TOPIC, {signer.kid: other.public_key()})
    tag = cbor2.loads(message)
    tag.value[2] = b"payloaD"
    with pytest.raises(BadSignatureError):
        verify_sign1(cbor2.dumps(tag), TOPIC, keys)
    tag.value[0] = cbor2.dumps({1: -7, 4: signer.kid})
    with pytest.raises(WrongAlgorithmError):
        verify_sign1(cbor2.dumps(tag), TOPIC, keys)
    for garbage in (b"\xff", cbor2.dumps([1, 2, 3, 4]), cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""]))):
        with pytest.raises(MalformedMessageError):
            verify_sign1(garbage, TOPIC, keys)
