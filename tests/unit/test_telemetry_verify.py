"""`firmware-agent verify` on saved dumps, and `firmware-agent keys`: one line per problem, exit status."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.cli import main
from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.keys import Keyring, load_signing_key, public_key_pem
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.verify import DumpWriter, TelemetryVerifier, read_dump
from firmware_agent.values import Batch, Sample

TOPIC = "vehicles/veh-0001/telemetry"


def _messages(key: Ed25519PrivateKey, n: int = 5, version: int = 2, first: int = 0) -> list[bytes]:
    seal = BatchSealer("veh-0001", Signer(key), payload_version=version)
    out = []
    for seq in range(first, first + n):
        batch = Batch()
        batch.add(Sample(1.7e9 + seq, "Vehicle.Speed", 10.0 * seq))
        batch.add(Sample(1.7e9 + seq + 0.5, "Vehicle.Speed", 10.0 * seq + 1))
        out.append(seal(batch, seq))
    return out


def _dump(path: Path, lines: list[tuple[str, bytes]]) -> Path:
    with path.open("w") as stream:
        writer = DumpWriter(stream)
        for topic, message in lines:
            writer.write(topic, message)
    return path


@pytest.fixture
def key_and_pub(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(key.public_key()))
    return key, pub


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware_agent", *args], capture_output=True, text=True)


def test_good_dump_verifies_and_exports_every_sample(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = key_and_pub
    dump = _dump(tmp_path / "good.dump", [(TOPIC, m) for m in _messages(key)])
    assert main(["verify", str(dump), "--public-key", str(pub)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 10
    assert rows[0] == {
        "vehicle": "veh-0001",
        "seq": 0,
        "signal": "Vehicle.Speed",
        "time": 1.7e9,
        "value": 0.0,
    }
    assert "5 messages, 5 verified, 0 problems" in err
    assert (
        main(
            ["verify", str(dump), "--public-key", str(pub), "--format", "csv", "-o", str(tmp_path / "s.csv")]
        )
        == 0
    )
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "vehicle,seq,signal,time,value" and len(lines) == 11


def test_a_dump_mixing_payload_versions_1_and_2_verifies_as_one_stream(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A fleet upgrades vehicle by vehicle, and one vehicle's outbox may hold both across an upgrade."""
    key, pub = key_and_pub
    mixed = _messages(key, 3, version=1) + _messages(key, 3, version=2, first=3)
    only_v1 = _messages(key, 6, version=1)
    assert [cbor2.loads(cbor2.loads(m).value[2])["v"] for m in mixed] == [1, 1, 1, 2, 2, 2]
    exports = []
    for name, messages in (("mixed", mixed), ("v1", only_v1)):
        dump = _dump(tmp_path / f"{name}.dump", [(TOPIC, m) for m in messages])
        assert main(["verify", str(dump), "--public-key", str(pub), "--format", "jsonl"]) == 0
        out, err = capsys.readouterr()
        assert "6 messages, 6 verified, 0 problems" in err
        exports.append(sorted(out.splitlines()))
    assert exports[0] == exports[1] and len(exports[0]) == 12, "the same samples, whichever version"


def test_tampered_retopiced_replayed_and_missing_batches_are_reported_one_line_each(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_and_pub
    messages = _messages(key, version=1)
    tag = cbor2.loads(messages[1])
    body = cbor2.loads(tag.value[2])
    body["signals"]["Vehicle.Speed"][1][0] = 999.0  # tampered value
    tag.value[2] = cbor2.dumps(body, canonical=True)
    lines = [
        (TOPIC, messages[0]),
        (TOPIC, cbor2.dumps(tag)),
        ("vehicles/veh-0002/telemetry", messages[2]),  # re-topiced onto another vehicle
        (TOPIC, messages[0]),  # replayed
        (TOPIC, messages[4]),  # seq 3 never arrives
    ]
    result = _run_cli(
        "verify", str(_dump(tmp_path / "bad.dump", lines)), "--public-key", str(pub), "--format", "none"
    )
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert problems[0].endswith(
        f"bad.dump:2: bad_signature: {TOPIC}: bad signature (kid {Signer(key).kid.hex()}, topic {TOPIC})"
    )
    assert problems[1].endswith(
        "bad.dump:3: wrong_topic: vehicles/veh-0002/telemetry: signed for vehicles/veh-0001/telemetry, "
        "received on vehicles/veh-0002/telemetry"
    )
    assert problems[2].endswith(f"bad.dump:4: replay: {TOPIC}: seq 0 seen before")
    assert problems[3] == f"gap: {TOPIC}: seq 1..3 missing"
    assert problems[4] == "verify: 5 messages, 2 verified, 3 missing, 4 problems"
    assert "Traceback" not in result.stderr


def test_unknown_key_and_duplicates_policy(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, _ = key_and_pub
    messages = _messages(key, 2)
    other = TelemetryVerifier({})
    assert str(other.check(TOPIC, messages[0])).startswith("unknown_kid: ")
    verifier = TelemetryVerifier({Signer(key).kid: key.public_key()}, allow_duplicates=True)
    for message in (messages[0], messages[0], messages[1]):
        verifier.check(TOPIC, message)
    assert (verifier.verified, verifier.duplicates, verifier.problems) == (3, 1, [])
    assert verifier.finish() == []


def test_bad_dump_line_and_missing_key_are_user_errors(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path]
) -> None:
    _, pub = key_and_pub
    (tmp_path / "x.dump").write_text(f"{TOPIC}\tnot base64!\n")
    result = _run_cli("verify", str(tmp_path / "x.dump"), "--public-key", str(pub))
    assert result.returncode == 1, "a bad line is a problem, reported with its line number, not a stop"
    assert "x.dump:1: bad base64" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the line and the summary
    result = _run_cli("verify", str(tmp_path / "x.dump"), "--public-key", str(tmp_path / "nope.pem"))
    assert result.returncode == 2 and "nope.pem: cannot read public key" in result.stderr


def test_dump_reads_folders_and_skips_comments(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, _ = key_and_pub
    messages = _messages(key, 2)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.dump").write_text(f"# saved\n\n{TOPIC}\t{base64.b64encode(messages[0]).decode()}\n")
    _dump(tmp_path / "d" / "b.dump", [(TOPIC, messages[1])])
    assert [(t, m) for t, m, _ in read_dump(tmp_path / "d")] == [(TOPIC, messages[0]), (TOPIC, messages[1])]


def test_keys_cli_generate_public_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring"
    assert main(["keys", "generate", "--key-dir", str(ring)]) == 0
    first = Keyring(ring).active_kid()
    assert main(["keys", "public", "--key-dir", str(ring), "-o", str(tmp_path / "first.pub")]) == 0
    assert f"kid {first.hex()}" in capsys.readouterr().err
    assert main(["keys", "rotate", "--key-dir", str(ring)]) == 0
    second = Keyring(ring).active_kid()
    assert second != first and f"was {first.hex()}" in capsys.readouterr().out
    assert main(["keys", "public", "--key-dir", str(ring), "--all"]) == 0
    out, err = capsys.readouterr()
    assert out.count("BEGIN PUBLIC KEY") == 2 and first.hex() in err and second.hex() in err
    assert Signer(load_signing_key(ring)).kid == second
    assert main(["keys", "generate", "--out", str(tmp_path / "one.pem")]) == 0
    assert main(["keys", "generate", "--out", str(tmp_path / "one.pem")]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "one.pem").chmod(0o644)
    assert main(["keys", "public", "--key", str(tmp_path / "one.pem")]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_rotation_keeps_old_batches_verifiable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring"
    Keyring.create(ring)
    before = _messages(load_signing_key(ring), 1)[0]
    Keyring(ring).rotate()
    after = BatchSealer("veh-0001", Signer(load_signing_key(ring)))(Batch(), 1)
    dump = _dump(tmp_path / "r.dump", [(TOPIC, before), (TOPIC, after)])
    assert main(["verify", str(dump), "--public-key", str(ring), "--format", "none"]) == 0
    assert "2 verified" in capsys.readouterr().err


def test_key_bound_to_another_vehicle_is_refused(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = key_and_pub
    dump = _dump(tmp_path / "d.dump", [(TOPIC, m) for m in _messages(key, 1)])
    assert main(["verify", str(dump), "--public-key", f"veh-0001={pub}", "--format", "none"]) == 0
    assert main(["verify", str(dump), "--public-key", f"veh-0009={pub}", "--format", "none"]) == 1
    assert (
        f"wrong_key: {TOPIC}: signed with kid {Signer(key).kid.hex()} of vehicle veh-0009"
        in capsys.readouterr().err
    )


def _forged(key: Ed25519PrivateKey, payload: dict[str, object]) -> bytes:
    """A well-formed COSE_Sign1 with the vehicle's kid whose signature does not match the payload."""
    good = cbor2.loads(Signer(key).sign(cbor2.dumps({"v": 1}), TOPIC))
    protected, _, _, signature = good.value
    return bytes(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, cbor2.dumps(payload), signature])))


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 1, "vehicle": "veh-0002", "seq": 0, "t0": 10**400, "signals": {}},
        {"v": 1, "vehicle": "veh-0002", "seq": 0, "t0": 1.7e9, "signals": {"a": [[10**400], [1]]}},
        {"v": 1, "vehicle": "veh-0002", "seq": 0, "t0": 1.7e9, "signals": {}, "events": [{"dt": 10**400}]},
    ],
    ids=["t0", "sample-dt", "event-dt"],
)
def test_forged_message_with_absurd_numbers_is_a_problem_and_the_verifier_goes_on(
    key_and_pub: tuple[Ed25519PrivateKey, Path], payload: dict[str, object]
) -> None:
    key, _ = key_and_pub
    verifier = TelemetryVerifier({Signer(key).kid: key.public_key()})
    assert verifier.check(TOPIC, _forged(key, payload)).kind == "bad_signature"  # type: ignore[union-attr]
    signed = Signer(key).sign(cbor2.dumps({**payload, "vehicle": "veh-0001"}), TOPIC)
    assert verifier.check(TOPIC, signed).kind == "malformed"  # type: ignore[union-attr]
    assert verifier.check(TOPIC, _messages(key, 1)[0]).payload.seq == 0  # type: ignore[union-attr]


def test_trailing_bytes_after_a_valid_message_are_refused(
    key_and_pub: tuple[Ed25519PrivateKey, Path],
) -> None:
    key, _ = key_and_pub
    verifier = TelemetryVerifier({Signer(key).kid: key.public_key()})
    message = _messages(key, 1)[0]
    problem = verifier.check(TOPIC, message + b"\x00")
    assert (problem.kind, "1 trailing bytes" in problem.detail) == ("malformed", True)  # type: ignore[union-attr]
    assert verifier.check(TOPIC, message).payload.seq == 0  # type: ignore[union-attr]


def test_a_bad_line_in_the_middle_of_a_dump_is_reported_and_the_rest_verified(
    tmp_path: Path, key_and_pub: tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = key_and_pub
    dump = _dump(tmp_path / "d.dump", [(TOPIC, m) for m in _messages(key, 3)])
    lines = dump.read_text().splitlines()
    dump.write_text("\n".join([lines[0], f"{TOPIC}\t%%%", "no tab here", *lines[1:]]) + "\n")
    result = _run_cli("verify", str(dump), "--public-key", str(pub), "--format", "none")
    assert result.returncode == 1
    assert (
        f"{dump}:2: bad base64" in result.stderr and f"{dump}:3: expected TOPIC<TAB>BASE64" in result.stderr
    )
    assert "3 messages, 3 verified" in result.stderr and "Traceback" not in result.stderr


def test_gaps_the_vehicle_counted_are_reported_as_evictions_not_problems(
    key_and_pub: tuple[Ed25519PrivateKey, Path],
) -> None:
    key, _ = key_and_pub
    seal = BatchSealer("veh-0001", Signer(key), counters=lambda: {"outbox.evicted": 3})
    verifier = TelemetryVerifier({Signer(key).kid: key.public_key()})
    for seq in (0, 4):
        verifier.check(TOPIC, seal(Batch(), seq))
    (gap,) = verifier.finish()
    assert (gap.kind, verifier.problems, verifier.counted_lost) == ("evicted", [], 3)
    uncounted = TelemetryVerifier({Signer(key).kid: key.public_key()})
    for seq in (0, 5):
        uncounted.check(TOPIC, seal(Batch(), seq))
    assert [p.kind for p in uncounted.finish()] == ["gap"] and len(uncounted.problems) == 1
