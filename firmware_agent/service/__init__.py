"""The daemon: its configuration (`config`: TOML file plus flags, validated into an `AgentConfig`) and
the assembled agent (`agent`: the only place that knows every stage; threads, clock, counters, health
file). systemd integration hooks in through `Agent(on_ready=..., on_heartbeat=...)`."""
