"""A full disk, the classic field failure of a car computer: the state directory on a real 2 MiB tmpfs.

Every batch the agent commits is delivered exactly once (by seq) or counted as evicted, deletes keep
working when nothing is left on the file system, counters survive restarts, and the agent exits within its
timeouts without a traceback. The mounted tests need root (`mount -t tmpfs`) and say so when they skip; the
variant with a simulated small disk (`free_space` reporting what a 1 MiB file system would have) runs
everywhere.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_agent.telemetry.cose import Signer
from firmware_agent.telemetry.disk import DISK_SHARE
from firmware_agent.telemetry.keys import generate_private_key
from firmware_agent.telemetry.outbox import BatchRejectedError, Outbox
from firmware_agent.telemetry.sealer import BatchSealer
from firmware_agent.telemetry.subscriber import Subscriber
from firmware_agent.telemetry.verify import TelemetryVerifier
from firmware_agent.values import Batch, Sample
from tests.integration.mosquitto import Mosquitto, backend_broker, free_port
from tests.integration.telemetry_helpers import pycose_verify

DISK_BYTES = 2 * 1024 * 1024
VEHICLE = "veh-0001"
TOPIC = f"vehicles/{VEHICLE}/telemetry"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs, unmounted at the end; skips (saying why) where mounting is impossible."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip(
            "mounting a 2 MiB tmpfs needs root; test_outbox_bound_follows_a_small_disk covers the bound"
        )
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


class Gate:
    """A TCP port in front of the broker that refuses connections until `open()` (a broker outage for one
    client only, while the backend's subscriber stays connected to the broker itself)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def fill(directory: Path) -> Path:
    """Take every byte left on `directory`'s file system (another process filling the disk)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\xff" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def du(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def big_batch(seed: int, samples: int = 5000) -> Batch:
    """About 70 KB once sealed (random floats do not shrink in CBOR): like a 1 s batch of the RAV4 drive."""
    rng = random.Random(seed)
    batch = Batch()
    for i in range(samples):
        batch.add(Sample(1.7e9 + seed + i / samples, f"S{i % 50}", rng.random()))
    return batch


def make_outbox(path: Path, **kwargs: object) -> Outbox:
    holder: list[Outbox] = []
    sealer = BatchSealer(VEHICLE, Signer(Ed25519PrivateKey.generate()), counters=lambda: holder[0].counters())
    outbox = Outbox(path, sealer, **kwargs)  # type: ignore[arg-type]
    holder.append(outbox)
    return outbox


def test_outbox_on_a_full_tmpfs_deletes_evicts_and_counts(small_disk: Path) -> None:
    path = small_disk / "outbox.sqlite3"
    outbox = make_outbox(path)
    for i in range(30):  # 2 MB of batches offline: the bound, not the disk, stops them
        outbox.commit(big_batch(i))
        assert du(small_disk) <= DISK_SHARE * DISK_BYTES + 64 * 1024
    assert outbox.counters()["evicted"] > 0
    assert outbox.condition is not None and "evicting" in outbox.condition
    fill(small_disk)  # now another writer takes every byte left
    for i in range(30, 40):  # newest data wins: still committed, by evicting the oldest
        outbox.commit(big_batch(i))
    with pytest.raises(BatchRejectedError):
        outbox.commit(big_batch(99, samples=60_000))  # larger than the outbox could ever hold
    pending = outbox.pending(1000)
    assert pending and pending[-1].seq == 39
    assert outbox.acknowledge_many(p.seq for p in pending) == len(pending), "deletes work on a full disk"
    counters = outbox.counters()
    assert counters["committed"] == 40 == counters["acknowledged"] + counters["evicted"]
    assert counters["rejected"] == 1
    outbox.close()
    assert os.statvfs(small_disk).f_bavail < 256 * 1024, "the disk is still (nearly) full"
    reopened = make_outbox(path)  # a restart on the full disk
    assert reopened.counters() == counters, "counters persisted across the restart"
    reopened.commit(Batch())
    assert reopened.next_seq() == 41
    reopened.close()


def test_outbox_bound_follows_a_small_disk(tmp_path: Path) -> None:
    """No mount needed: `free_space` answers as a 1 MiB file system holding only the outbox would."""
    capacity = 1024 * 1024

    def free_space(directory: Path) -> int:
        return max(0, capacity - du(directory))

    outbox = make_outbox(tmp_path / "o.db", free_space=free_space)
    seqs = []
    for i in range(40):
        seqs.append(outbox.commit(big_batch(i, samples=2500)))
        assert du(tmp_path) <= capacity, "the WAL, the index and the reserve count against the disk too"
    counters = outbox.counters()
    assert counters["evicted"] > 0 and counters["disk_full"] > 0
    assert counters["committed"] == 40 == outbox.pending_count() + counters["evicted"]
    assert outbox.pending(1000)[-1].seq == seqs[-1], "the newest batch is kept"
    outbox.close()


def test_a_batch_evicted_in_flight_is_counted_once(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o.db", max_bytes=512 * 1024)
    first, second = outbox.commit(big_batch(0, 1000)), outbox.commit(big_batch(1, 1000))
    outbox.published(first)
    outbox.published(second)  # the MQTT client holds both
    while outbox.pending(1) and outbox.pending(1)[0].seq <= second:
        outbox.commit(big_batch(outbox.next_seq(), 1000))
    counters = outbox.counters()
    assert counters["evicted_in_flight"] == 2, "not counted as lost while a copy may still arrive"
    assert outbox.acknowledge(first), "the PUBACK of an evicted batch still counts as delivered"
    after = outbox.counters()
    assert after["acknowledged"] == 1 and after["evicted"] == counters["evicted"]
    outbox.close()  # the second one's copy dies with the MQTT client: now it is lost, and counted
    reopened = make_outbox(tmp_path / "o.db", max_bytes=512 * 1024)
    final = reopened.counters()
    assert final["evicted"] == counters["evicted"] + 1 and final["evicted_in_flight"] == 0
    assert final["committed"] == final["acknowledged"] + final["evicted"] + reopened.pending_count()
    reopened.close()


def _agent(broker_url: str, key: Path, state: Path, source: str, *dbc: str) -> list[str]:
    # The RAV4's databases lack the identity stage's signals: this test is about the outbox.
    # Payload version 1 (~80 KB batches): the drive overflows 2 MiB, as in the issue; version 2's 12 KB
    # batches would all fit (0.64 MB for the whole drive).
    config = key.with_name("agent.toml")
    config.write_text("[identity]\nenabled = false\n[telemetry]\npayload_version = 1\n")
    command = [sys.executable, "-m", "firmware_agent", "run", "--config", str(config)]
    command += ["--source", source, "--collect", "all"]
    command += ["--broker", broker_url, "--vehicle-id", VEHICLE, "--signing-key", str(key)]
    command += ["--state-dir", str(state), "--exit-at-end"]
    for spec in dbc:
        command += ["--dbc", spec]
    return command


def test_agent_on_a_2mib_state_dir_delivers_or_counts_every_batch_and_exits(
    small_disk: Path,
    mosquitto: Mosquitto,
    tmp_path: Path,
    rav4_capture: Path,
    rav4_dbc_specs: list[str],
) -> None:
    """The issue's replay: every signal of the RAV4 drive, broker down until the outbox overflowed."""
    broker = mosquitto
    key_path = tmp_path / "signing-key.pem"
    private = generate_private_key(key_path)
    state = small_disk / "state"
    verifier = TelemetryVerifier({Signer(private).kid: private.public_key()}, allow_duplicates=True)
    gate = Gate(broker.host, broker.port)  # the agent's way to the broker: closed until the outbox overflowed
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"]) as sub:
        command = _agent(gate.url, key_path, state, f"replay:{rav4_capture}", *rav4_dbc_specs)
        agent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert agent.stderr is not None
            lines = []
            for line in agent.stderr:  # the one line that says the outbox is full and evicting
                lines.append(line)
                if "evicting" in line:
                    break
            time.sleep(2.0)  # let the replay finish offline
            gate.open()
            _, rest = agent.communicate(timeout=120)
        finally:
            agent.kill()
            gate.close()
        stderr = "".join(lines) + rest
        assert agent.returncode == 0, stderr
        messages = []
        while (item := sub.get(3.0)) is not None:
            messages.append(item)
    assert "Traceback" not in stderr
    assert sum("outbox:" in line for line in stderr.splitlines()) <= 4, "one log line per change"
    payloads = {}
    for topic, message in messages:
        payload = pycose_verify(message, topic, private)
        payloads[payload.seq] = payload
        verifier.check(topic, message)
    assert payloads, stderr
    last = payloads[max(payloads)]
    assert last.counters is not None, "the final batch carries the final counters"
    committed = last.counters["outbox.committed"] + 1  # its own commit is counted after sealing
    evicted = last.counters["outbox.evicted"] + last.counters["outbox.evicted_in_flight"]
    assert evicted > 0
    assert set(payloads) <= set(range(committed))
    assert len(payloads) + evicted == committed, "every batch delivered once or counted as evicted"
    print(
        f"2 MiB tmpfs: {committed} committed, {len(payloads)} delivered, {evicted} evicted, "
        f"counters {last.counters}"
    )
    verifier.finish()  # gaps between delivered seqs are evictions the vehicle counted, not problems
    assert verifier.problems == [] and verifier.counted_lost == verifier.missing <= evicted

    # A restart on the same directory with the disk full: drains what it can and exits 0.
    fill(small_disk)
    with Subscriber(backend_broker(broker), ["vehicles/+/telemetry"]) as sub:
        command = _agent(broker.url, key_path, state, "sim:duration=3,seed=1")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        after = [pycose_verify(m, t, private).seq for t, m in iter(lambda: sub.get(3.0), None)]
    assert after and min(after) >= committed, done.stderr
