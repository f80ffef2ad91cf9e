"""One PostgreSQL server for the stack: the Prefect server's database, MLflow's tracking and
registry store, and Optuna's storage, each a database of its own.

The binaries come from the system package manager (``make postgres``). PostgreSQL refuses
to run as root, so under root the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

DATABASES = ("prefect", "mlflow", "optuna")
SUPERUSER = "mlsys"
SYSTEM_USER = "postgres"


class PostgresError(RuntimeError):
    """PostgreSQL is missing or could not be set up."""


def find_bin_dir() -> Path:
    """The folder holding initdb and postgres: on PATH, else Debian's versioned folders."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    raise PostgresError(
        "PostgreSQL is not installed: `make postgres` (apt-get install -y postgresql)"
    )


def run_as() -> str | None:
    """The user the server runs as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses root; no {SYSTEM_USER!r} user exists "
            "to run it (the postgresql package creates one)"
        ) from None
    return SYSTEM_USER


def _reachable_by(user: str, folder: Path) -> bool:
    """Can ``user`` traverse every folder above ``folder``?"""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g for g in os.getgrouplist(user, entry.pw_gid)}
    for parent in [*reversed(folder.parents)]:
        info = parent.stat()
        if info.st_uid == entry.pw_uid:
            ok = info.st_mode & 0o100
        elif info.st_gid in groups:
            ok = info.st_mode & 0o010
        else:
            ok = info.st_mode & 0o001
        if not ok:
            return False
    return True


def data_dir(folder: Path, user: str | None) -> Path:
    """``<folder>/data``, owned by the server's user. When that user cannot reach it (root's
    private folders such as /root or pytest's temporary folders), the data lives in
    /var/tmp and ``<folder>/data`` is a link to it."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "data"
    if user is None or link.is_symlink() or _reachable_by(user, folder):
        return link
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    outside = Path("/var/tmp/mlsys-postgres") / digest
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.parent.chmod(0o755)
    link.symlink_to(outside)
    return link


def initialize(bin_dir: Path, data: Path, password: str, user: str | None, log: Path) -> bool:
    """``initdb`` once (a superuser with ``password``, scram over TCP); False when the
    cluster already exists."""
    target = data.resolve()
    if (target / "PG_VERSION").is_file():
        return False
    target.mkdir(parents=True, exist_ok=True)
    pwfile = target.parent / f".{target.name}.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (target, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    target.chmod(0o700)
    cmd = [str(bin_dir / "initdb"), "-D", str(target), "-U", SUPERUSER, f"--pwfile={pwfile}"]
    cmd += ["--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8", "--no-sync"]
    try:
        done = subprocess.run(  # noqa: S603
            cmd, capture_output=True, text=True, check=False, user=user, group=user,
            extra_groups=[] if user else None, timeout=300,
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    with open(log, "a") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise PostgresError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return True


def server_command(bin_dir: Path, data: Path, port: int) -> list[str]:
    """TCP on 127.0.0.1 only (no Unix socket), enough connections for every server and
    worker of the stack."""
    return [
        str(bin_dir / "postgres"),
        "-D", str(data.resolve()),
        "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",
        "-c", "max_connections=300",
        "-c", "fsync=off",  # a development stack: speed over durability across power loss
    ]  # fmt: skip


def url(password: str, port: int, database: str, driver: str = "psycopg") -> str:
    """A SQLAlchemy URL: ``postgresql+psycopg`` for MLflow and Optuna, ``+asyncpg`` for
    Prefect."""
    return f"postgresql+{driver}://{SUPERUSER}:{password}@127.0.0.1:{port}/{database}"


def _connect(password: str, port: int, database: str = "postgres"):  # noqa: ANN202
    import psycopg  # noqa: PLC0415 - only the stack needs the driver

    return psycopg.connect(
        host="127.0.0.1", port=port, user=SUPERUSER, password=password, dbname=database,
        connect_timeout=3, autocommit=True,
    )  # fmt: skip


def ready(password: str, port: int) -> bool:
    """The server accepts our login and answers a query."""
    try:
        with _connect(password, port) as conn:
            conn.execute("select 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def ensure_databases(password: str, port: int, names: tuple[str, ...] = DATABASES) -> list[str]:
    """Create the databases that do not exist yet; returns those created."""
    created = []
    with _connect(password, port) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in names:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise PostgresError(f"bad database name {name!r}")
            if name not in existing:
                conn.execute(f'create database "{name}"')
                created.append(name)
    return created
