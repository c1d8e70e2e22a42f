"""Daemon wiring: configuration, pipeline assembly, systemd notify/watchdog, health."""
