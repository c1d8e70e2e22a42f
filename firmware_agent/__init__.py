"""firmware-agent: an in-vehicle telemetry agent.

Reads CAN buses through DBC definitions, identifies the driver and uploads COSE-signed telemetry over MQTT.
"""

__version__ = "0.1.0"
