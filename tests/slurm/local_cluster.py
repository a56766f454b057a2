"""A throw-away single-node SLURM cluster (with accounting) built from Debian's packages.

Why: the tests that submit real jobs through ``submitit`` need a scheduler that behaves like a
cluster's (sbatch, sacct, requeue, signals), and none runs on a developer's or CI's machine.
This module installs the packages, writes every config, state file, log, socket and the MariaDB
datadir under one state directory, starts the daemons as child processes and stops exactly
those pids again; it touches no system config beyond installing packages. Standard library
only, so it runs before anything else is installed.

Command line: ``python tests/slurm/local_cluster.py install|start|stop|status [--state-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_STATE_DIR = Path("/tmp/sslvision-slurm")
CLUSTER_NAME = "sslvision"
PARTITION = "debug"
ACCOUNT = "sslvision"
SLURMCTLD_PORT = 16817
SLURMD_PORT = 16818
SLURMDBD_PORT = 16819
MARIADB_PORT = 16820
DB_USER = "slurm"
DB_PASSWORD = "sslvision-local"  # only reachable on 127.0.0.1 and the private socket
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server"]
BINARIES = [
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "sinfo",
    "scontrol",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
]
# Start order; stop goes the other way. Each name is also the pid file's stem.
DAEMONS = ["mariadb", "munged", "slurmdbd", "slurmctld", "slurmd"]
# slurmctld holds a requeued job back for cred_expire + 1 s (default 120 s) so that the old
# job's credentials have expired before it runs again.
CRED_EXPIRE_S = 10
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def _log(message: str) -> None:
    print(f"[local_cluster] {message}", file=sys.stderr, flush=True)


def _which(name: str) -> str | None:
    """Like shutil.which but also looks in the sbin folders, which root's PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if _which(name) is None]


def install_packages() -> bool:
    """Install SLURM, munge and MariaDB from Debian; quick no-op when the binaries are there.

    Services must not start while installing (no systemd here, and we run our own copies under
    the state dir), so a policy-rc.d that answers 101 is put in place for the install when the
    machine has none, and removed after. Returns False (with the reason on stderr) on failure.
    """
    if not missing_binaries():
        return True
    if os.geteuid() != 0:
        _log(f"missing {missing_binaries()} and not root: cannot apt-get install")
        return False
    if _which("apt-get") is None:
        _log("missing SLURM binaries and there is no apt-get on this machine")
        return False
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = False
    if not policy.exists():
        policy.write_text(
            "#!/bin/sh\n# sslvision local_cluster: no services while installing\nexit 101\n"
        )
        policy.chmod(0o755)
        added_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-3000:]
                _log(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
                return False
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)
    missing = missing_binaries()
    if missing:
        _log(f"apt-get installed the packages but these are still missing: {missing}")
        return False
    return True


class Cluster:
    """A running local cluster: its state dir, the pids it started and the env to reach it.

    A plain class, not a dataclass: dataclasses need the module in sys.modules, which a test
    that loads this file with importlib.util.spec_from_file_location may not arrange.
    """

    def __init__(self, state_dir: Path, pids: dict[str, int] | None = None) -> None:
        self.state_dir = state_dir
        self.pids: dict[str, int] = dict(pids or {})
        # Popen handles of the daemons started in this process, so they are waited for (no
        # zombies, no ResourceWarning); empty for a cluster found through load().
        self._procs: dict[str, subprocess.Popen] = {}

    def __repr__(self) -> str:
        return f"Cluster(state_dir={str(self.state_dir)!r}, pids={self.pids})"

    @property
    def conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def partition(self) -> str:
        return PARTITION

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (sbatch, sacct, submitit): SLURM_CONF and an sbin PATH.

        Every slurm command reads its config from SLURM_CONF; jobs inherit this too.
        """
        path = os.environ.get("PATH", "/usr/bin:/bin")
        for extra in ("/usr/sbin", "/sbin"):
            if extra not in path.split(os.pathsep):
                path += os.pathsep + extra
        return {"SLURM_CONF": str(self.conf), "PATH": path}

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run a slurm client command against this cluster and return its stdout."""
        proc = subprocess.run(
            list(args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def stop(self) -> None:
        """Cancel the cluster's jobs, then kill the daemons this cluster started, newest first.

        Only pids recorded at start are signalled, and only while they still are the same
        process (same start time), so nothing else on the machine is touched.
        """
        if _alive(self.pids.get("slurmctld")):
            # Job steps (slurmstepd) outlive slurmd; cancel them while the daemons still run.
            try:
                self.run("scancel", "--full", "--user=root", check=False, timeout=10)
                deadline = time.monotonic() + 15
                while (
                    time.monotonic() < deadline
                    and self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).strip()
                ):
                    time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        records = _read_pid_records(self.state_dir)
        for name in reversed(DAEMONS):
            pid = self.pids.get(name)
            proc = self._procs.pop(name, None)
            if pid is None:
                continue
            if _same_process(pid, records.get(name, {}).get("starttime")):
                _terminate(pid, name, proc)
            elif proc is not None:
                proc.wait(timeout=5)  # it exited by itself: reap it
        for name in DAEMONS:
            (self.state_dir / "run" / f"{name}.json").unlink(missing_ok=True)
        self.pids.clear()


# ---------------------------------------------------------------------------- process helpers


def _proc_starttime(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), to detect reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _same_process(pid: int, starttime: str | None) -> bool:
    return _alive(pid) and (starttime is None or _proc_starttime(pid) == starttime)


def _terminate(pid: int, name: str, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait, then SIGKILL; waits on the child when this process started it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while proc is None and time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    _log(f"{name} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: SIGKILL")
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=5)
        return
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)


def _read_pid_records(state_dir: Path) -> dict[str, dict]:
    records = {}
    for name in DAEMONS:
        path = state_dir / "run" / f"{name}.json"
        try:
            records[name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return records


def load(state_dir: Path) -> Cluster:
    """The cluster a previous ``start`` (maybe in another process) left in state_dir."""
    records = _read_pid_records(state_dir)
    return Cluster(state_dir=state_dir, pids={n: int(r["pid"]) for n, r in records.items()})


# ---------------------------------------------------------------------------- configuration


def _node_line(host: str) -> str:
    """The node's hardware as slurmd itself detects it, so the node never drains on a mismatch."""
    out = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True)
    words = out.stdout.splitlines()[0].split() if out.returncode == 0 and out.stdout else []
    keep = ("CPUs=", "Boards=", "SocketsPerBoard=", "CoresPerSocket=", "ThreadsPerCore=")
    hw = [w for w in words if w.startswith(keep)] or [f"CPUs={os.cpu_count() or 1}"]
    # RealMemory stays at its default (1 MB): jobs ask no memory and nothing enforces it.
    return f"NodeName={host} NodeAddr=127.0.0.1 {' '.join(hw)} State=UNKNOWN"


def _write_configs(state_dir: Path, host: str) -> None:
    d = state_dir
    munge_socket = d / "munge" / "munge.socket.2"
    for sub in ("etc", "log", "run", "slurmctld", "slurmd", "mysql", "munge"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    slurm_conf = f"""\
# Written by tests/slurm/local_cluster.py: a single-node cluster for tests, no cgroups.
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={SLURMCTLD_PORT}
SlurmdPort={SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A short credential life: slurmctld holds a requeued job back until its old one expires.
AuthInfo=socket={munge_socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={d / "slurmctld"}
SlurmdSpoolDir={d / "slurmd"}
SlurmctldPidFile={d / "run" / "slurmctld.pid"}
SlurmdPidFile={d / "run" / "slurmd.pid"}
SlurmctldLogFile={d / "log" / "slurmctld.log"}
SlurmdLogFile={d / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Schedule every 2 s: a requeued job waits for its BeginTime and then for the next periodic
# scheduling pass, which is 30-60 s away by default.
SchedulerParameters=bf_interval=1,sched_interval=2
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={SLURMDBD_PORT}
# slurmctld authenticates to slurmdbd through this munge socket.
AccountingStoragePass={munge_socket}
AccountingStorageEnforce=associations
{_node_line(host)}
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    (d / "etc" / "slurm.conf").write_text(slurm_conf)
    dbd_conf = d / "etc" / "slurmdbd.conf"
    dbd_conf.write_text(f"""\
# Written by tests/slurm/local_cluster.py
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={SLURMDBD_PORT}
SlurmUser=root
LogFile={d / "log" / "slurmdbd.log"}
PidFile={d / "run" / "slurmdbd.pid"}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={MARIADB_PORT}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
StorageLoc=slurm_acct_db
""")
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config that others can read
    (d / "etc" / "my.cnf").write_text(f"""\
[mariadbd]
datadir={d / "mysql"}
socket={d / "run" / "mariadb.sock"}
pid-file={d / "run" / "mariadb.pid"}
log-error={d / "log" / "mariadb.log"}
bind-address=127.0.0.1
port={MARIADB_PORT}
user=root
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=48M
innodb_lock_wait_timeout=900
max_connections=50
""")


# ---------------------------------------------------------------------------- start


class StartError(RuntimeError):
    """A daemon did not come up; the message carries the tail of its log."""


def _tail(path: Path, lines: int = 25) -> str:
    """The end of a daemon's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(cluster: Cluster, name: str, cmd: list[str], log: Path) -> None:
    """Start a daemon in the foreground as our child and record its pid and start time."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **cluster.env},
            start_new_session=True,
        )
    cluster.pids[name] = proc.pid
    cluster._procs[name] = proc
    record = {"pid": proc.pid, "starttime": _proc_starttime(proc.pid), "cmd": cmd}
    (cluster.state_dir / "run" / f"{name}.json").write_text(json.dumps(record))


def _wait_for(
    what: str, ready: Callable[[], bool], cluster: Cluster, name: str, log: Path, timeout: float
) -> None:
    """Poll ready() until it holds; fail fast, with the log tail, if the daemon dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(cluster.pids.get(name)):
            raise StartError(f"{name} exited while waiting for {what}; {log}:\n{_tail(log)}")
        try:
            if ready():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.5)
    raise StartError(f"timed out after {timeout:.0f} s waiting for {what}; {log}:\n{_tail(log)}")


def _start_mariadb(cluster: Cluster) -> None:
    d = cluster.state_dir
    cnf = d / "etc" / "my.cnf"
    log = d / "log" / "mariadb.out"
    fresh = not (d / "mysql" / "mysql").is_dir()
    if fresh:
        proc = subprocess.run(
            [
                _which("mariadb-install-db") or "mariadb-install-db",
                f"--defaults-file={cnf}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise StartError(f"mariadb-install-db failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    _spawn(cluster, "mariadb", [_which("mariadbd") or "mariadbd", f"--defaults-file={cnf}"], log)
    sock = d / "run" / "mariadb.sock"

    def sql(statement: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                _which("mariadb") or "mariadb",
                "--no-defaults",
                f"--socket={sock}",
                "-uroot",
                "-e",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )

    _wait_for(
        "mariadb",
        lambda: sql("SELECT 1").returncode == 0,
        cluster,
        "mariadb",
        d / "log" / "mariadb.log",
        START_TIMEOUT_S,
    )
    for host in ("127.0.0.1", "localhost"):
        res = sql(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASSWORD}';"
            f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'{host}';"
        )
        if res.returncode != 0:
            raise StartError(f"creating the slurm database user failed: {res.stderr}")


def _start_munged(cluster: Cluster) -> None:
    d = cluster.state_dir / "munge"
    d.chmod(0o755)  # clients refuse a socket dir that others can write or cannot enter
    key = d / "munge.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(1024))
    key.chmod(0o400)
    munged = _which("munged") or "munged"
    # --force: run despite a stale socket left by a killed munged (or a loose permission).
    # Foreground munged logs to its stderr, which goes to log/munged.out.
    cmd = [
        munged,
        "--foreground",
        "--force",
        f"--key-file={key}",
        f"--socket={d / 'munge.socket.2'}",
        f"--pid-file={d / 'munged.pid'}",
        f"--log-file={cluster.state_dir / 'log' / 'munged.log'}",
        f"--seed-file={d / 'munged.seed'}",
    ]
    log = cluster.state_dir / "log" / "munged.out"
    _spawn(cluster, "munged", cmd, log)
    _wait_for("the munge socket", (d / "munge.socket.2").exists, cluster, "munged", log, 30)


def _sacctmgr_ready(cluster: Cluster) -> bool:
    proc = subprocess.run(
        ["sacctmgr", "-n", "-P", "list", "cluster"],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=20,
    )
    return proc.returncode == 0


def start(state_dir: Path = DEFAULT_STATE_DIR) -> Cluster:
    """Write the configs and start mariadb, munged, slurmdbd, slurmctld and slurmd, in order.

    Returns once ``sinfo`` shows the node idle and ``sacct`` answers. On failure every daemon
    started so far is stopped again and the error carries the failing daemon's log tail.
    """
    state_dir = Path(state_dir).resolve()
    if any(_alive(p) for p in load(state_dir).pids.values()):
        raise StartError(f"a cluster already runs from {state_dir}: stop it first")
    if missing_binaries():
        raise StartError(f"missing binaries {missing_binaries()}: run install_packages() first")
    host = socket.gethostname().split(".")[0]
    _write_configs(state_dir, host)
    cluster = Cluster(state_dir=state_dir)
    logs = state_dir / "log"
    try:
        _start_mariadb(cluster)
        _start_munged(cluster)
        _spawn(cluster, "slurmdbd", [_which("slurmdbd") or "slurmdbd", "-D"], logs / "slurmdbd.out")
        _wait_for(
            "slurmdbd",
            lambda: _sacctmgr_ready(cluster),
            cluster,
            "slurmdbd",
            logs / "slurmdbd.log",
            START_TIMEOUT_S,
        )
        # The cluster and an account must exist before slurmctld registers and jobs run.
        cluster.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME, check=False)
        cluster.run(
            "sacctmgr",
            "-i",
            "add",
            "account",
            ACCOUNT,
            f"cluster={CLUSTER_NAME}",
            "Description=tests",
            "Organization=sslvision",
            check=False,
        )
        cluster.run(
            "sacctmgr",
            "-i",
            "add",
            "user",
            "root",
            f"account={ACCOUNT}",
            f"DefaultAccount={ACCOUNT}",
            f"cluster={CLUSTER_NAME}",
            check=False,
        )
        # With AccountingStorageEnforce=associations a job without one is refused at sbatch.
        assoc = cluster.run(
            "sacctmgr",
            "-n",
            "-P",
            "list",
            "assoc",
            "user=root",
            f"account={ACCOUNT}",
            f"cluster={CLUSTER_NAME}",
            "format=user",
            check=False,
        )
        if "root" not in assoc:
            raise StartError(
                f"root has no association in the accounting database: {assoc!r}; "
                f"{logs / 'slurmdbd.log'}:\n{_tail(logs / 'slurmdbd.log')}"
            )
        _spawn(
            cluster,
            "slurmctld",
            [_which("slurmctld") or "slurmctld", "-D", "-i"],
            logs / "slurmctld.out",
        )
        _wait_for(
            "slurmctld",
            lambda: bool(cluster.run("scontrol", "ping", check=False, timeout=10).count("UP")),
            cluster,
            "slurmctld",
            logs / "slurmctld.log",
            START_TIMEOUT_S,
        )
        _spawn(cluster, "slurmd", [_which("slurmd") or "slurmd", "-D"], logs / "slurmd.out")

        def node_idle() -> bool:
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).strip()
            # "mixed"/"allocated": jobs recovered from the state dir already run on it.
            return state in ("idle", "mixed", "allocated")

        _wait_for(
            "the node to be idle",
            node_idle,
            cluster,
            "slurmd",
            logs / "slurmd.log",
            START_TIMEOUT_S,
        )
        _wait_for(
            "sacct",
            lambda: _sacct_ok(cluster),
            cluster,
            "slurmdbd",
            logs / "slurmdbd.log",
            START_TIMEOUT_S,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _sacct_ok(cluster: Cluster) -> bool:
    proc = subprocess.run(
        ["sacct", "-n", "-a"],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.returncode == 0


# ---------------------------------------------------------------------------- command line


def status(state_dir: Path) -> str:
    """One line per daemon (pid and whether it runs) and sinfo's view of the node."""
    cluster = load(state_dir)
    records = _read_pid_records(state_dir)
    lines = []
    for name in DAEMONS:
        pid = cluster.pids.get(name)
        up = pid is not None and _same_process(pid, records.get(name, {}).get("starttime"))
        lines.append(f"{name:10s} pid={pid} {'running' if up else 'stopped'}")
    ctld = cluster.pids.get("slurmctld")
    if ctld is not None and _same_process(ctld, records.get("slurmctld", {}).get("starttime")):
        lines.append(cluster.run("sinfo", check=False).rstrip())
    lines.append(f"export SLURM_CONF={cluster.conf}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["install", "start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    if args.action == "install":
        t0 = time.monotonic()
        ok = install_packages()
        _log(f"install {'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.1f} s")
        return 0 if ok else 1
    if args.action == "start":
        if not install_packages():
            return 1
        t0 = time.monotonic()
        try:
            cluster = start(state_dir)
        except StartError as err:
            _log(str(err))
            return 1
        _log(f"started in {time.monotonic() - t0:.1f} s; partition {PARTITION}")
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    if args.action == "stop":
        load(state_dir).stop()
        return 0
    print(status(state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
