"""The daemon: its configuration (`config`: TOML file plus flags, validated into an `AgentConfig`), the
assembled agent (`agent`: the only place that knows every stage; threads, clock, counters), and its life
as a service: `lifecycle` (signals, notifications, event log, reload via `reload`), `notify` (the systemd
notify protocol), `logs` (one line per event), `status` (`health.json` and `firmware-agent status`) and
`install` (`firmware-agent install-service`)."""
