"""A throwaway PostgreSQL server for tests: ``initdb`` in a temp dir, listening on 127.0.0.1 only.

    from pg import postgres_server
    with postgres_server() as url:      # postgresql://nas@127.0.0.1:PORT/nas_test
        ...

Skips the test (with the reason) where no PostgreSQL server binaries are installed. The
server runs as user ``postgres`` when the tests run as root (PostgreSQL refuses root), and
is stopped by its pid at the end.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["postgres_server", "server_binaries"]


def server_binaries() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl`` and ``createdb`` (newest Debian version first, then PATH)."""
    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return Path(folder)
    found = [shutil.which(tool) for tool in ("initdb", "pg_ctl", "createdb")]
    return Path(found[0]).parent if all(found) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], *, user: str | None, cwd: str) -> None:
    proc = subprocess.run(args, user=user, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def postgres_server(dbname: str = "nas_test") -> Iterator[str]:
    """Start a private server, create ``dbname``, yield its URL; stop the server by pid after."""
    bindir = server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, createdb); install them: apt-get install postgresql")
    user = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        user = "postgres"
    root = tempfile.mkdtemp(prefix="nas-pg-")
    os.chmod(root, 0o755)
    if user:
        shutil.chown(root, user=user)
    data, port, pid = f"{root}/data", _free_port(), None
    try:
        _run([str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "nas", "--no-sync"], user=user, cwd=root)
        # -k: the Unix socket in our folder, not /var/run/postgresql; TCP on loopback only
        _run([str(bindir / "pg_ctl"), "-D", data, "-l", f"{root}/server.log", "-w", "-t", "60",
              "-o", f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off", "start"], user=user, cwd=root)
        pid = int(Path(data, "postmaster.pid").read_text().split()[0])
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "nas", dbname], user=user, cwd=root)
        yield f"postgresql://nas@127.0.0.1:{port}/{dbname}"
    finally:
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGINT)  # the postmaster's "fast shutdown"
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
