"""Payload encoding, COSE signing and verification, the durable outbox and the MQTT uploader.

One job per module:

- `topics`: vehicle-id rule (`validate_vehicle_id`) and topic names (`telemetry_topic`, `status_topic`,
  `campaigns_topic`).
- `payload`: `encode_payload(batch, vehicle, seq, counters) -> bytes` (version 1), `decode_payload(bytes)
  -> Payload` (versions 1 and 2).
- `payload_v2`: the compact version 2, `encode_payload_v2(batch, vehicle, seq, counters, scales)`,
  `scale_hints(messages, name_for)`.
- `keys`: PEM key files (0600), `kid_of`, `Keyring` (active + retired keys), `load_signing_key`,
  `load_verification_keys`.
- `cose`: `Signer(private_key).sign(payload, topic)`, `verify_sign1(message, topic, keys)` and its errors.
- `sealer`: `BatchSealer(vehicle_id, signer, counters, payload_version, scales)`, the `seal(batch, seq) ->
  bytes` the outbox calls.
- `outbox`: `Outbox(path, seal, max_bytes)`: `commit`, `pending`, `acknowledge`, `dead_letter`, `counters`.
- `disk`: how much of its file system the outbox may use, and the reserve that lets it delete when full.
- `driver_fields`: the identity stage's part of the wire format (the batch's `driver` map, driver events).
- `broker`: `BrokerConfig(url, ca_file, cert_file, key_file, keepalive)` (the one broker settings type,
  also the agent's `[broker]`), `make_client`.
- `uploader`: `Uploader(UploaderConfig(...), outbox, on_campaign)`: `start`, `notify`, `flush`, `stop`.
- `campaign_updates`: `CampaignUpdates(vehicle_id, backend_keys, on_update, on_event, state_file)`.
- `subscriber`: `Subscriber(broker, topics)`, a bounded receiving client (verify, tests).
- `verify`: `TelemetryVerifier`, the dump format, sample export (the `verify` command's library).

Wiring in the daemon (`service/agent.py`), in short::

    signer = Signer(load_signing_key(key_path))                   # PEM file or keyring folder
    outbox_ref: list[Outbox] = []
    sealer = BatchSealer(vehicle_id, signer, counters=lambda: outbox_ref[0].counters())
    outbox = Outbox(state_dir / "outbox.sqlite3", sealer, max_bytes=64 << 20)
    outbox_ref.append(outbox)
    updates = CampaignUpdates(vehicle_id, load_verification_keys([backend_pem]), on_update, on_event,
                              state_file=state_dir / "campaign-serial")
    uploader = Uploader(UploaderConfig(BrokerConfig(url, ca, cert, key), vehicle_id), outbox,
                        on_campaign=updates.handle)
    uploader.start()
    ...  seq = outbox.commit(batch); uploader.notify()   # per batch; BatchRejectedError when it cannot fit
    uploader.stop(timeout=10); outbox.close()
"""
