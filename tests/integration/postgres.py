"""A throwaway PostgreSQL cluster for tests, the benchmark and the demo (Debian's `postgresql` package).

`initdb` into a fresh folder under /tmp, a Unix socket only (no TCP listener), stopped at the end. initdb and
postgres refuse to run as root, so as root they run as the `postgres` user (`runuser`), whose folder this
is; as another user they run as that user. Facts (PostgreSQL 15, Debian 12): the binaries are in
/usr/lib/postgresql/N/bin; initdb with `--no-sync` takes ~1 s here, a start ~0.3 s.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl/postgres of the newest installed PostgreSQL, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Postgres:
    """One cluster: `start()`, `stop()`, `restart(mode)`, `uri` (database `fleet`), `kill()`."""

    def __init__(self, port: int, bindir: Path | None = None) -> None:
        self.bindir = bindir or postgres_bin()
        if self.bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (`make sysdeps` installs the `postgresql` package)"
            )
        self.root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.socket_dir.mkdir()
        self.port = port
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(
            [
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = ''\nport = {port}\nunix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 50\nlogging_collector = off\n"
            )
        self.running = False

    @property
    def uri(self) -> str:
        """libpq URI of the `fleet` database over the Unix socket."""
        return f"postgresql:///fleet?host={self.socket_dir}&port={self.port}&user=postgres"

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, cwd="/")

    def start(self) -> None:
        """Start and wait until it accepts connections; create the `fleet` database the first time."""
        result = self._run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start"],
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()} {self.log()}")
        self.running = True
        admin = f"postgresql:///postgres?host={self.socket_dir}&port={self.port}&user=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'fleet'").fetchone():
                conn.execute("CREATE DATABASE fleet")

    def stop(self, mode: str = "fast") -> None:
        """Stop (`fast`: clean; `immediate`: like a crash, recovered at the next start)."""
        if self.running:
            self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)
            self.running = False

    def restart(self, mode: str = "immediate") -> None:
        """Stop (by default like a crash) and start again on the same socket."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop and remove the cluster's folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
