"""Fixtures for tests against a real mosquitto (see `tests/integration/mosquitto.py` and `pki.py`).

Reusable by any integration test (e.g. end-to-end runs of `firmware-agent run`):

- `pki` (session): a test CA in a temporary folder; `pki.ca`, `pki.issue_vehicle("veh-0001")` -> CertFiles
  (`.cert`, `.key`), `pki.issue_unchecked(cn, stem)` for any CN.
- `mosquitto`: a started plain broker allowing anonymous clients; `.url` is `mqtt://127.0.0.1:PORT`,
  `.restart()`, `.stop()`, `.start()`, `.log()`.
- `mosquitto_tls`: a started TLS broker (`mqtts://127.0.0.1:PORT`) that requires a client certificate from
  `pki`, takes the username from its CN and applies the per-vehicle ACL `VEHICLE_ACL`.
- `mosquitto_factory(pki=None, max_inflight=None, persistent=False, max_packet_size=None)`: more brokers
  with other settings; all stopped at the end.
- `mosquitto_persistent`: a started plain broker that keeps sessions across `restart()` (persistence on),
  so a backend subscriber with a session misses nothing while the broker is down.
- `postgres`: a started throwaway PostgreSQL cluster (`tests/integration/postgres.py`); `.uri`, `.restart()`.

Helpers in `tests.integration.mosquitto`: `vehicle_broker(broker, vehicle_id)` and
`backend_broker(broker)` return the `BrokerConfig` (URL and certificates) for a vehicle or for the
backend (which may read and write all of `vehicles/#`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.mosquitto import MOSQUITTO, BrokerFactory, Mosquitto
from tests.integration.pki import Pki

if TYPE_CHECKING:
    from tests.integration.postgres import Postgres


def _require_mosquitto() -> None:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.fail(f"mosquitto is not installed ({MOSQUITTO}); `make sysdeps` installs it")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test CA, a server certificate for 127.0.0.1, and client certificates on demand."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """`make(pki=None, max_inflight=None, persistent=False, max_packet_size=None)`: a started `Mosquitto`,
    stopped at teardown."""
    _require_mosquitto()
    brokers: list[Mosquitto] = []

    def make(
        pki: Pki | None = None,
        max_inflight: int | None = None,
        persistent: bool = False,
        max_packet_size: int | None = None,
    ) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        broker = Mosquitto(
            workdir,
            pki=pki,
            max_inflight=max_inflight,
            persistent=persistent,
            max_packet_size=max_packet_size,
        )
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> Mosquitto:
    """A started plain broker on 127.0.0.1 allowing anonymous MQTT clients."""
    return mosquitto_factory()


@pytest.fixture
def mosquitto_tls(mosquitto_factory: BrokerFactory, pki: Pki) -> Mosquitto:
    """A started TLS broker requiring client certificates from `pki`, with the per-vehicle ACL."""
    return mosquitto_factory(pki=pki)


@pytest.fixture
def mosquitto_persistent(mosquitto_factory: BrokerFactory) -> Mosquitto:
    """A started plain broker with persistence: subscriptions and queued messages survive `restart()`."""
    return mosquitto_factory(persistent=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A started throwaway PostgreSQL cluster (Unix socket only); `.uri` is the `fleet` database."""
    from tests.integration.mosquitto import free_port
    from tests.integration.postgres import Postgres, postgres_bin

    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed; `make sysdeps` installs the `postgresql` package")
    cluster = Postgres(free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
