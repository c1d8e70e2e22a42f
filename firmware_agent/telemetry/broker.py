"""Broker addresses (`mqtt://host:port`, `mqtts://host:port`) and MQTT v5 paho clients configured for them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from firmware_agent.errors import UserError
from firmware_agent.telemetry.keys import check_secret

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: MQTT's Keep Alive is a 16-bit number of seconds; paho's network thread died on a larger one.
MAX_KEEPALIVE = 65535


class BrokerConfigError(UserError):
    """A broker URL or TLS file setting the agent cannot use."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to authenticate to it.

    `mqtts://` needs `ca_file` (the broker's CA) and, for client-certificate authentication, `cert_file` and
    `key_file`. The broker's certificate must name the URL's host (DNS name or IP address).
    """

    url: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30

    def __post_init__(self) -> None:
        self.address()  # fail early on a bad URL
        if (self.cert_file is None) != (self.key_file is None):
            raise BrokerConfigError("client certificate and key must be given together (--cert and --key)")
        if self.cert_file is not None and not self.uses_tls():
            raise BrokerConfigError(f"{self.url}: client certificates need an mqtts:// URL")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not Path(path).is_file():
                raise BrokerConfigError(f"{path}: no such file")
        if self.key_file is not None:
            check_secret(Path(self.key_file), "TLS client key")
        if not 0 < self.keepalive <= MAX_KEEPALIVE:
            raise BrokerConfigError(f"keepalive {self.keepalive}: must be 1..{MAX_KEEPALIVE} seconds (MQTT)")

    def address(self) -> tuple[str, int]:
        """The (host, port) of the URL; raises `BrokerConfigError` for anything but mqtt(s)://host[:port]."""
        shown = redacted(self.url)
        try:
            parts = urlsplit(self.url)
            hostname, port = parts.hostname, parts.port
        except ValueError as exc:  # mqtt://[::1 (unclosed IPv6 bracket), port out of range, ...
            raise BrokerConfigError(f"broker URL {shown!r}: {exc}") from exc
        if parts.scheme not in DEFAULT_PORTS or not hostname or parts.path not in ("", "/"):
            raise BrokerConfigError(f"broker URL {shown!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        if parts.username is not None or parts.password is not None:
            # never silently dropped, never echoed: the agent authenticates with client certificates
            raise BrokerConfigError(
                f"broker URL {shown!r}: user names and passwords are not supported; use mqtts:// with a "
                "client certificate (cert_file, key_file)"
            )
        if port == 0:
            raise BrokerConfigError(f"broker URL {shown!r}: port 0 is not a port")
        return hostname, port or DEFAULT_PORTS[parts.scheme]

    def uses_tls(self) -> bool:
        """True for `mqtts://`."""
        return urlsplit(self.url).scheme == "mqtts"


def redacted(url: str) -> str:
    """`url` with any password replaced by `***`, for messages (a URL may carry `user:password@`)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


def make_client(config: BrokerConfig, client_id: str) -> mqtt.Client:
    """A paho client speaking MQTT v5 with version-2 callbacks, TLS set up as `config` says.

    The caller sets callbacks and the will, then calls `connect_async(*config.address(), ...)`.
    """
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=True
    )
    if config.uses_tls():
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file) if config.ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.cert_file and config.key_file:
            context.load_cert_chain(str(config.cert_file), str(config.key_file))
        client.tls_set_context(context)
    return client
