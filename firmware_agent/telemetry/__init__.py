"""Payload encoding, COSE signing and verification, the durable outbox and the MQTT uploader."""
