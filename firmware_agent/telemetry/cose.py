"""COSE_Sign1 (RFC 9052 §4.2) with Ed25519, bound to the MQTT topic through `external_aad`.

Message: CBOR tag 18 around `[protected: bstr, unprotected: {}, payload: bstr, signature: bstr]`, where
`protected` is the canonical CBOR encoding of `{1: -8, 4: kid}` (alg EdDSA, 8-byte kid). The signature is
Ed25519 over `Sig_structure = ["Signature1", protected, external_aad, payload]` with `external_aad` the UTF-8
topic, so a batch moved onto another vehicle's topic no longer verifies.

Built on `cryptography` and `cbor2`; the tests check it against pycose, an independent implementation.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_agent.telemetry.keys import kid_of

#: CBOR tag of COSE_Sign1.
COSE_SIGN1_TAG = 18
#: COSE header labels and the EdDSA algorithm id.
HEADER_ALG, HEADER_CRIT, HEADER_KID = 1, 2, 4
ALG_EDDSA = -8


class VerificationError(Exception):
    """A message that must not be trusted; subclasses say why."""


class MalformedMessageError(VerificationError):
    """Not a COSE_Sign1 message of the shape this agent produces."""


class WrongAlgorithmError(VerificationError):
    """The protected header names an algorithm other than EdDSA (-8)."""


class UnknownKidError(VerificationError):
    """No known public key has the message's kid."""


class BadSignatureError(VerificationError):
    """The signature does not verify for the payload, protected header and topic."""


def _sig_structure(protected: bytes, topic: str, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, topic.encode("utf-8"), payload])


class Signer:
    """Signs payloads with one Ed25519 key; thread-safe (it holds no mutable state)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.kid = kid_of(private_key.public_key())
        self._protected = cbor2.dumps({HEADER_ALG: ALG_EDDSA, HEADER_KID: self.kid}, canonical=True)

    def sign(self, payload: bytes, topic: str) -> bytes:
        """The tagged COSE_Sign1 message carrying `payload`, signed for `topic`."""
        signature = self._key.sign(_sig_structure(self._protected, topic, payload))
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [self._protected, {}, payload, signature]))


def _parse(message: bytes) -> tuple[bytes, dict[object, object], bytes, bytes]:
    stream = io.BytesIO(message)
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise MalformedMessageError(f"not CBOR: {exc}") from exc
    if stream.tell() != len(message):
        # cbor2.loads ignores what follows the first item: bytes appended to a signed message would
        # otherwise pass unnoticed (and a receiver storing the raw message would store them)
        raise MalformedMessageError(
            f"{len(message) - stream.tell()} trailing bytes after the COSE_Sign1 message"
        )
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise MalformedMessageError("not a tagged COSE_Sign1 message (CBOR tag 18)")
    parts = obj.value
    if not isinstance(parts, list) or len(parts) != 4:
        raise MalformedMessageError("COSE_Sign1 is not an array of 4 items")
    protected_bstr, unprotected, payload, signature = parts
    if not all(isinstance(p, bytes) for p in (protected_bstr, payload, signature)):
        raise MalformedMessageError("protected header, payload or signature is not a byte string")
    if not isinstance(unprotected, dict):
        raise MalformedMessageError("unprotected header is not a map")
    try:
        protected = cbor2.loads(protected_bstr) if protected_bstr else {}
    except Exception as exc:
        raise MalformedMessageError(f"protected header is not CBOR: {exc}") from exc
    if not isinstance(protected, dict):
        raise MalformedMessageError("protected header is not a map")
    return protected_bstr, protected, payload, signature


def unverified_payload(message: bytes) -> bytes:
    """The payload of a COSE_Sign1 message WITHOUT checking anything; for diagnostics only."""
    return _parse(message)[2]


def message_kid(message: bytes) -> bytes | None:
    """The kid in the protected header, unchecked; None when absent."""
    kid = _parse(message)[1].get(HEADER_KID)
    return kid if isinstance(kid, bytes) else None


def verify_sign1(message: bytes, topic: str, keys: Mapping[bytes, Ed25519PublicKey]) -> bytes:
    """Verify a COSE_Sign1 `message` received on `topic` against `keys` (by kid); return its payload.

    Raises `MalformedMessageError`, `WrongAlgorithmError`, `UnknownKidError` or `BadSignatureError`.
    """
    protected_bstr, protected, payload, signature = _parse(message)
    if HEADER_CRIT in protected:
        raise MalformedMessageError("critical headers are not supported")
    alg = protected.get(HEADER_ALG)
    if alg != ALG_EDDSA:
        raise WrongAlgorithmError(f"algorithm {alg!r} is not EdDSA (-8)")
    kid = protected.get(HEADER_KID)
    if not isinstance(kid, bytes):
        raise MalformedMessageError("no kid in the protected header")
    public_key = keys.get(kid)
    if public_key is None:
        raise UnknownKidError(f"unknown kid {kid.hex()}")
    try:
        public_key.verify(signature, _sig_structure(protected_bstr, topic, payload))
    except InvalidSignature as exc:
        raise BadSignatureError(f"bad signature (kid {kid.hex()}, topic {topic})") from exc
    return payload
