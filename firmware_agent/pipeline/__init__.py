"""The agent's processing stages between sources and the outbox: decode to samples, E2E checks, hooks.

Stages are plain objects with no threads of their own; `firmware_agent.service` wires them together with
the sources, the collector and the telemetry side and runs them on one pipeline thread.
"""
