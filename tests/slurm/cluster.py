"""A real, private Slurm cluster on this machine, for tier-4 tests (see docs/DESIGN.md §6).

``LocalSlurmCluster`` installs Debian's ``munge slurmctld slurmd slurm-client`` when they are
missing, then starts one ``munged``, one ``slurmctld`` and one ``slurmd`` per emulated node, all
from a private temporary directory with their own socket, ports, state and logs. Nothing under
``/etc`` or ``/var`` is used except to install the packages (and, when asked to, to make the
emulated node names resolve: see ``resolve_node_names``). Only the processes this object started
are ever signalled.

Usage::

    with LocalSlurmCluster(num_nodes=2) as cluster:
        job_id = cluster.submit("job.sbatch", args=["--nodes=2"])
        info = cluster.wait(job_id, timeout=60)
        assert info["JobState"] == "COMPLETED", cluster.read_output(info)

See ``tests/slurm/README.md`` for the layout of the temporary directory and the known limits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal as _signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["LocalSlurmCluster", "SlurmUnavailable", "SlurmError", "ensure_slurm_packages"]

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
# Programs the harness runs; all of them come from PACKAGES.
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel", "srun")

# Job states after which a job will not run again unless someone requeues it.
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)

# Environment variables that make Slurm clients believe they run inside some other job or
# pick up defaults from it (when the test suite itself runs under Slurm).
_INHERITED_SLURM_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_", "SCONTROL_")

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_ETC_HOSTS = Path("/etc/hosts")
_HOSTS_LOCK = Path("/tmp/.prealign-slurm-hosts.lock")
# Marks the /etc/hosts lines this harness adds, followed by the owning cluster's directory.
_HOSTS_TAG = "# prealign-test-slurm"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be provided here (not root and the packages are missing): callers skip."""


class SlurmError(RuntimeError):
    """A Slurm daemon or command failed; the message carries the relevant logs."""


# --------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------


def _missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    suffixes = ("_Packages", "_Packages.lz4", "_Packages.gz", "_Packages.xz")
    return lists.is_dir() and any(p.name.endswith(suffixes) for p in lists.iterdir())


def _run_apt(args: Sequence[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a dpkg lock held by someone else instead of failing at once.
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    return subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ensure_slurm_packages() -> None:
    """Install the Debian Slurm and MUNGE packages unless their programs are already on PATH.

    Package maintainer scripts would normally start the system's munge/slurm services; a
    ``policy-rc.d`` that answers 101 ("action forbidden") is put in place for the duration of
    the install when none exists, so no daemon outside this harness's control is started.

    Raises:
        SlurmUnavailable: the programs are missing and we are not root (cannot install).
        SlurmError: apt-get failed; the message holds its output.
    """
    if not _missing_programs():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            f"Slurm programs {_missing_programs()} are not installed and installing "
            f"{' '.join(PACKAGES)} needs root"
        )
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"Slurm programs {_missing_programs()} are missing and there is no apt-get")

    added_policy = False
    if not _POLICY_RC_D.exists():
        _POLICY_RC_D.write_text(
            "#!/bin/sh\n# Added by megatron_prealign tests/slurm while installing; removed after.\nexit 101\n"
        )
        _POLICY_RC_D.chmod(0o755)
        added_policy = True
    try:
        install = ["install", "-y", "--no-install-recommends", *PACKAGES]
        log = []
        if not _apt_lists_present():
            log.append(_run_apt(["update"]))
        result = _run_apt(install)
        log.append(result)
        if result.returncode != 0:
            # Stale or missing package lists are the usual cause: refresh once and retry.
            log.append(_run_apt(["update"]))
            result = _run_apt(install)
            log.append(result)
        if result.returncode != 0:
            output = "\n".join(f"$ {' '.join(r.args)}\n{r.stdout[-4000:]}" for r in log)
            raise SlurmError(f"apt-get could not install {' '.join(PACKAGES)}:\n{output}")
    finally:
        if added_policy:
            _POLICY_RC_D.unlink(missing_ok=True)
    missing = _missing_programs()
    if missing:
        raise SlurmError(f"installed {' '.join(PACKAGES)} but {missing} are still not on PATH")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _free_tcp_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free right now (held open together while picked)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<unreadable: {exc}>"
    text = data[-limit:].decode(errors="replace")
    return ("...\n" if len(data) > limit else "") + text


def _addresses(name: str) -> set[str]:
    """The addresses ``name`` resolves to (empty when it does not resolve)."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None)}
    except socket.gaierror:
        return set()


@contextlib.contextmanager
def _hosts_lock():
    with open(_HOSTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _filter_hosts(keep) -> None:
    """Rewrite /etc/hosts in place (it is often a bind mount) keeping the lines ``keep`` accepts.

    The caller holds ``_hosts_lock()``.
    """
    with open(_ETC_HOSTS, "r+") as f:
        lines = f.readlines()
        kept = [ln for ln in lines if keep(ln)]
        if len(kept) != len(lines):
            f.seek(0)
            f.writelines(kept)
            f.truncate()


def _is_stale_hosts_line(line: str) -> bool:
    """A line of ours whose cluster is gone: no live slurmctld behind its directory.

    Such lines are left only when a test process was killed before ``close()``.
    """
    if _HOSTS_TAG not in line:
        return False
    pid_file = Path(line.split(_HOSTS_TAG, 1)[1].strip()) / "run" / "slurmctld.pid"
    try:
        return not _pid_alive(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        return True


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


_VERSION_CACHE: tuple[int, int] | None = None


def _slurm_version() -> tuple[int, int]:
    """(major, minor) of the installed Slurm, e.g. (22, 5) from ``slurm-wlm 22.05.8``."""
    global _VERSION_CACHE
    if _VERSION_CACHE is None:
        out = subprocess.run(
            ["slurmctld", "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ).stdout
        m = re.search(r"(\d+)\.(\d+)", out)
        if not m:
            raise SlurmError(f"cannot parse Slurm version from {out!r}")
        _VERSION_CACHE = (int(m.group(1)), int(m.group(2)))
    return _VERSION_CACHE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ancestors(pid: int) -> set[int]:
    chain = {pid}
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.add(pid)
    return chain


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol show ... -o`` line (``Key=Value Key=Value ...``) into a dict.

    Values may contain spaces (e.g. ``Reason=...``); a new field starts at whitespace followed
    by ``Key=``, where keys are made of letters, digits and ``/:_.`` (``Socks/Node``).
    """
    fields: dict[str, str] = {}
    matches = list(re.finditer(r"(?:^|\s)([A-Za-z][\w/:.]*)=", line.strip()))
    text = line.strip()
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields[m.group(1)] = text[m.end() : end].strip()
    return fields


# --------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------


class LocalSlurmCluster:
    """A private Slurm cluster (munged + slurmctld + ``num_nodes`` slurmd) on this machine.

    Every emulated node ``n1..nN`` is a slurmd on localhost with its own port; jobs on
    different emulated nodes are ordinary processes on this machine.

    Args:
        num_nodes: number of emulated compute nodes (``n1``...).
        cpus_per_node: CPUs each node advertises; default: this machine's core count, at
            least 2. More than the real count is allowed (``SlurmdParameters=config_overrides``).
        real_memory_mb: ``RealMemory`` of each node. Memory is not a consumable resource
            (``SelectTypeParameters=CR_Core``), so this only bounds ``--mem`` requests.
        cred_expire_s: job credential lifetime; Slurm also holds a requeued job for this
            long (+1 s) before starting it again. Slurm's minimum is 5.
        kill_wait_s: ``KillWait``: time between SIGTERM and SIGKILL at cancel/timeout.
        resolve_node_names: when the node names do not resolve, add ``127.0.0.1 n1 n2 ...``
            to /etc/hosts (root only) for the cluster's lifetime, tagged, and remove that
            line at close. Rendezvous code that does ``scontrol show hostnames`` needs it.
        start_timeout_s: how long to wait for all nodes to become idle.
        workdir: parent of the private temporary directory (default: the system temp dir).
    """

    def __init__(
        self,
        num_nodes: int = 1,
        *,
        cpus_per_node: int | None = None,
        real_memory_mb: int = 1024,
        cred_expire_s: int = 5,
        kill_wait_s: int = 5,
        resolve_node_names: bool = True,
        start_timeout_s: float = 60.0,
        workdir: str | os.PathLike | None = None,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if cred_expire_s < 5:
            raise ValueError(f"cred_expire_s must be >= 5 (Slurm's minimum), got {cred_expire_s}")
        self.num_nodes = num_nodes
        self.cpus_per_node = cpus_per_node or max(2, os.cpu_count() or 1)
        self.real_memory_mb = real_memory_mb
        self.cred_expire_s = cred_expire_s
        self.kill_wait_s = kill_wait_s
        self.resolve_node_names = resolve_node_names
        self.start_timeout_s = start_timeout_s
        self._workdir = workdir
        self.node_names = [f"n{i}" for i in range(1, num_nodes + 1)]
        self.root: Path | None = None
        self.conf_path: Path | None = None
        self.env: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self.munge_socket: Path | None = None
        self._hosts_line: str | None = None
        self._closed = False
        self._atexit_registered = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> "LocalSlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalSlurmCluster(num_nodes={self.num_nodes}, root={self.root}, pids={self.pids})"

    @property
    def pids(self) -> dict[str, int]:
        """PID of every daemon this cluster started, by name (``munged``, ``slurmctld``, ``slurmd-n1``...)."""
        return {name: p.pid for name, p in self._procs.items()}

    def start(self) -> None:
        """Install packages if needed, start munged, slurmctld and the slurmds, wait for idle nodes.

        Raises:
            SlurmUnavailable: not root and the packages are missing.
            SlurmError: a daemon did not come up; the message holds the daemon logs.
        """
        if self.root is not None:
            raise RuntimeError("a LocalSlurmCluster is started once; make a new one")
        ensure_slurm_packages()
        if not self._atexit_registered:
            atexit.register(self.close)
            self._atexit_registered = True
        self._closed = False
        try:
            self._make_root()
            self._start_munge()
            self._start_slurm_with_retry()
            if self.resolve_node_names:
                self._ensure_node_names_resolve()
        except BaseException:
            self.close()
            raise

    def close(self, timeout: float = 10.0) -> None:
        """Stop what this cluster started and remove its temporary directory. Idempotent.

        Jobs are cancelled first (so their processes go too), then the daemons get SIGTERM,
        then SIGKILL after ``timeout`` seconds. Finally any process still carrying this
        cluster's ``SLURM_CONF`` in its environment (a left-over slurmstepd or job process,
        both descendants of our slurmd) is killed. Nothing is signalled by name.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
                self.cancel_all_jobs(timeout=min(timeout, 10.0))
            # Compute daemons first, then the controller, then munge (which the others use).
            order = [n for n in self._procs if n.startswith("slurmd")] + ["slurmctld", "munged"]
            self._terminate([self._procs[n] for n in order if n in self._procs], timeout)
            self._kill_stragglers(timeout)
        finally:
            self._remove_hosts_line()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
            if self._atexit_registered:
                atexit.unregister(self.close)
                self._atexit_registered = False

    # ----------------------------------------------------------------- public API

    def submit(
        self,
        script_path: str | os.PathLike,
        env: Mapping[str, str] | None = None,
        args: Iterable[str] = (),
        cwd: str | os.PathLike | None = None,
    ) -> int:
        """``sbatch --parsable [args] script_path``; return the job id.

        Args:
            script_path: the batch script.
            env: variables added to ``self.env`` for sbatch (the job inherits them: sbatch's
                default ``--export=ALL``; keep ``SLURM_CONF`` if you pass ``--export``).
            args: extra sbatch options, placed before the script path.
            cwd: submission (and, by default, job working) directory; default: the cluster's
                ``jobs/`` directory, where ``slurm-<id>.out`` then lands.
        """
        run_env = dict(self.env)
        if env:
            run_env.update(env)
        out = self._run(
            ["sbatch", "--parsable", *args, str(script_path)],
            env=run_env,
            cwd=str(cwd) if cwd is not None else str(self.root / "jobs"),
        )
        # --parsable prints "<jobid>[;<cluster>]".
        return int(out.strip().split(";")[0])

    def job_info(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -o <id>`` parsed into a dict (JobState, ExitCode, StdOut, ...)."""
        out = self._run(["scontrol", "show", "job", "-o", str(job_id)])
        line = out.strip().splitlines()[0] if out.strip() else ""
        info = parse_scontrol_record(line)
        if "JobId" not in info:
            raise SlurmError(f"unexpected scontrol output for job {job_id}: {out!r}")
        return info

    def wait(
        self,
        job_id: int,
        timeout: float = 60.0,
        states: Iterable[str] = TERMINAL_STATES,
        poll_s: float = 0.2,
    ) -> dict[str, str]:
        """Poll the job until its ``JobState`` is in ``states`` (default: terminal); return its fields.

        ``sbatch --wait`` polls slowly (seconds apart); this polls every ``poll_s``. Pass
        ``states={"RUNNING"}`` to wait for a start.

        Raises:
            TimeoutError: not reached within ``timeout``; the message holds the last fields and logs.
        """
        wanted = frozenset(states)
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while True:
            info = self.job_info(job_id)
            if info.get("JobState") in wanted:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} not in {sorted(wanted)} after {timeout} s; last state "
                    f"{info.get('JobState')} (Reason={info.get('Reason')})\n{self.logs()}"
                )
            self._check_daemons_alive()
            time.sleep(poll_s)

    def cancel(
        self, job_id: int, signal: str | int | None = None, *, batch: bool = False, full: bool = False
    ) -> None:
        """``scancel``: cancel the job, or only send it ``signal`` (a name like ``"TERM"`` or a number).

        Who receives a signal (Slurm 22.05, measured by tests/slurm/test_cluster.py):

        * default: the tasks of every ``srun`` step, straight from slurmstepd; the batch
          shell is *not* signalled, so a ``trap`` in the script does not fire. This is the
          path for a trainer launched with ``srun`` that saves on SIGTERM.
        * ``batch=True`` (``--batch``): only the batch shell, not its children or steps.
        * ``full=True`` (``--full``): the batch shell and all its children, including the
          ``srun`` client; srun answers SIGTERM by aborting its step with SIGKILL, so the
          tasks' own traps do not run. Avoid it for srun-launched trainers.

        Without ``signal`` this is a plain ``scancel`` (SIGTERM to everything, SIGKILL after
        ``KillWait``, state CANCELLED) and the flags do not apply.
        """
        cmd = ["scancel"]
        if signal is not None:
            name = signal if isinstance(signal, str) else _signal.Signals(signal).name
            cmd.append(f"--signal={name.removeprefix('SIG')}")
            if full:
                cmd.append("--full")
            elif batch:
                cmd.append("--batch")
        elif batch or full:
            raise ValueError("batch/full only select who receives an explicit signal")
        self._run([*cmd, str(job_id)])

    def requeue(self, job_id: int) -> None:
        """``scontrol requeue``: kill the job if running and queue it again.

        The job must allow it (``sbatch --requeue``). Slurm holds it for ``cred_expire_s + 1``
        seconds before the next start; the rerun sees ``SLURM_RESTART_COUNT`` incremented.
        """
        self._run(["scontrol", "requeue", str(job_id)])

    def read_output(self, job: int | Mapping[str, str], stream: str = "StdOut") -> str:
        """Contents of the job's stdout (or ``stream="StdErr"``); ``job`` is an id or ``wait()``'s dict."""
        info = self.job_info(job) if isinstance(job, int) else job
        path = info.get(stream)
        if not path:
            raise SlurmError(f"job {info.get('JobId')} has no {stream} path: {dict(info)}")
        return Path(path).read_text(errors="replace")

    def node_info(self) -> dict[str, dict[str, str]]:
        """``scontrol show node -o`` parsed, by node name."""
        out = self._run(["scontrol", "show", "node", "-o"])
        nodes = {}
        for line in out.splitlines():
            if line.strip():
                rec = parse_scontrol_record(line)
                nodes[rec.get("NodeName", "")] = rec
        return nodes

    def logs(self, limit: int = 3000) -> str:
        """Tails of every daemon log and of their captured stderr, for error messages."""
        if self.root is None:
            return "<cluster not started>"
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"==== {path.name} ====\n{_tail(path, limit)}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- bring-up

    def _make_root(self) -> None:
        base = Path(self._workdir) if self._workdir is not None else Path(tempfile.gettempdir())
        # The munge socket path must fit in sockaddr_un (108 bytes).
        if len(str(base)) > 60:
            base = Path("/tmp")
        self.root = Path(tempfile.mkdtemp(prefix="prealign-slurm-", dir=base))
        # munged insists that every directory above its socket is searchable by everyone.
        self.root.chmod(0o755)
        for sub in ("munge", "log", "run", "state", "spool", "jobs"):
            (self.root / sub).mkdir(mode=0o755)
        for name in self.node_names:
            (self.root / "spool" / name).mkdir(mode=0o755)
        self.conf_path = self.root / "slurm.conf"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_SLURM_PREFIXES)}
        self.env = {**base_env, "SLURM_CONF": str(self.conf_path)}

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        # setpriv (util-linux, always in Debian) sets a parent-death signal and then execs the
        # daemon in place (same PID): if the test process is killed outright, so that atexit
        # never runs, the daemons still get SIGTERM. Doing it with a preexec_fn instead would
        # be unsafe once the test process has threads (torch).
        if shutil.which("setpriv"):
            cmd = ["setpriv", "--pdeathsig", "TERM", "--", *cmd]
        stderr = open(self.root / "log" / f"{name}.stderr", "wb")
        try:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                cwd=str(self.root),
            )
        finally:
            stderr.close()
        self._procs[name] = proc
        return proc

    def _start_munge(self) -> None:
        d = self.root / "munge"
        key = d / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.munge_socket = d / "munge.socket"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={d / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={d / 'munged.seed'}",
                "--num-threads=2",
            ],
        )
        self._wait_until(lambda: self.munge_socket.exists(), 20.0, "munged did not create its socket")

    def _start_slurm_with_retry(self, attempts: int = 3) -> None:
        # Ports are picked free but released before the daemons bind them; if another process
        # grabs one in between, start over with fresh ports.
        for attempt in range(attempts):
            self.ports = dict(zip(["slurmctld", *self.node_names], _free_tcp_ports(self.num_nodes + 1)))
            self._write_conf()
            try:
                self._start_slurm_daemons()
                return
            except SlurmError:
                if attempt + 1 == attempts or "Address already in use" not in self.logs():
                    raise
                slurm = [self._procs.pop(n) for n in list(self._procs) if n != "munged"]
                self._terminate(slurm, 5.0)
                shutil.rmtree(self.root / "state", ignore_errors=True)
                (self.root / "state").mkdir(mode=0o755)
                for log in (self.root / "log").glob("s*"):
                    log.rename(log.with_name(f"{log.name}.attempt{attempt}"))

    def _write_conf(self) -> None:
        r = self.root
        user = "root" if os.geteuid() == 0 else _current_user()
        lines = [
            "# Generated by tests/slurm/cluster.py for one test session; removed at close.",
            f"ClusterName=prealign{secrets.token_hex(3)}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ports['slurmctld']}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge" if _slurm_version() >= (23, 11) else "CryptoType=crypto/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire_s}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            # Start batch jobs at submit, and rescan the queue every second: by default the main loop
            # runs each 60 s and backfill each 30 s, which is when a requeued job (held until
            # its BeginTime) would otherwise start again.
            "SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MailProg=/bin/true",
            f"KillWait={self.kill_wait_s}",
            "InactiveLimit=0",
            "MinJobAge=600",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool' / '%n'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"TmpFS={r / 'jobs'}",
        ]
        for name in self.node_names:
            lines.append(
                f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.ports[name]} "
                f"CPUs={self.cpus_per_node} RealMemory={self.real_memory_mb} State=UNKNOWN"
            )
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _start_slurm_daemons(self) -> None:
        conf = str(self.conf_path)
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", conf])
        self._wait_until(
            lambda: self._try_run(["scontrol", "ping"]) is not None, 30.0, "slurmctld does not answer ping"
        )
        for name in self.node_names:
            self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-N", name, "-f", conf])
        self._wait_until(self._all_nodes_idle, self.start_timeout_s, "nodes did not become idle")

    def _all_nodes_idle(self) -> bool:
        out = self._try_run(["sinfo", "-h", "-N", "-o", "%N %T"])
        if out is None:
            return False
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in self.node_names)

    def _ensure_node_names_resolve(self) -> None:
        """Make ``n1..nN`` resolve to 127.0.0.1, so job code can rendezvous on the first host of
        ``scontrol show hostnames $SLURM_NODELIST`` as it would on a real cluster.

        Slurm itself needs no name resolution here (``NodeAddr=127.0.0.1``). A tagged line is
        appended to /etc/hosts and removed at close; names that another live cluster of this
        harness added get a line of our own too, so its close cannot break our names.
        """
        for name in self.node_names:
            addrs = _addresses(name)
            if addrs and not all(a.startswith("127.") or a == "::1" for a in addrs):
                raise SlurmError(
                    f"emulated node name {name!r} resolves to {sorted(addrs)}, not to this machine; "
                    "jobs would rendezvous elsewhere"
                )
        root_user = os.geteuid() == 0
        with _hosts_lock():
            if root_user:
                _filter_hosts(lambda ln: not _is_stale_hosts_line(ln))
            hosts = _ETC_HOSTS.read_text()
            tagged = set()
            for line in hosts.splitlines():
                if _HOSTS_TAG in line:
                    tagged.update(line.split(_HOSTS_TAG)[0].split()[1:])
            unresolved = [n for n in self.node_names if not _addresses(n)]
            needed = [n for n in self.node_names if n in tagged or n in unresolved]
            if not needed or (not root_user and not unresolved):
                return
            if not root_user:
                raise SlurmError(
                    f"node names {unresolved} do not resolve and only root may add them to /etc/hosts; "
                    "pass resolve_node_names=False and rendezvous on $SLURM_LAUNCH_NODE_IPADDR"
                )
            line = f"127.0.0.1 {' '.join(needed)} {_HOSTS_TAG} {self.root}\n"
            # /etc/hosts is often a bind mount: append in place, never replace the file.
            with open(_ETC_HOSTS, "a") as f:
                f.write(line if not hosts or hosts.endswith("\n") else "\n" + line)
            self._hosts_line = line
        still = [n for n in needed if not _addresses(n)]
        if still:
            raise SlurmError(f"added {line.strip()!r} to /etc/hosts but {still} still do not resolve")

    def _remove_hosts_line(self) -> None:
        if self._hosts_line is None:
            return
        with _hosts_lock():
            _filter_hosts(lambda ln: ln != self._hosts_line)
        self._hosts_line = None

    # ----------------------------------------------------------------- teardown

    def cancel_all_jobs(self, timeout: float = 10.0) -> bool:
        """Kill every job of this cluster and wait, at most ``timeout`` s, for an empty queue.

        Only this cluster's jobs are touched: the clients reach our controller (``SLURM_CONF``).
        Returns whether the queue is empty.
        """
        out = self._try_run(["squeue", "-h", "-o", "%i"])
        if out is not None and not out.strip():
            return True
        if out:
            # SIGKILL to every process at once (pending jobs just reject it), then cancel.
            self._try_run(["scancel", "--full", "--signal=KILL", *out.split()])
            self._try_run(["scancel", *out.split()])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self._try_run(["squeue", "-h", "-o", "%i"])
            if out is not None and not out.strip():
                return True
            time.sleep(0.2)
        return False

    @staticmethod
    def _terminate(procs: list[subprocess.Popen], timeout: float) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5.0)

    def _kill_stragglers(self, timeout: float) -> None:
        pids = self.stray_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, _signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p)]
            time.sleep(0.05)

    def stray_pids(self) -> list[int]:
        """PIDs (other than this process and its ancestors) whose environment has our ``SLURM_CONF``.

        Our daemons, the slurmstepds they fork and the job processes all inherit it; after
        ``close()`` this list must be empty.
        """
        if self.conf_path is None:
            return []
        marker = f"SLURM_CONF={self.conf_path}".encode()
        exclude = _ancestors(os.getpid())
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in exclude:
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry))
        return found

    # ----------------------------------------------------------------- plumbing

    def _run(
        self,
        cmd: list[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 60.0,
    ) -> str:
        try:
            res = subprocess.run(
                cmd,
                env=dict(env) if env is not None else self.env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{' '.join(cmd)} timed out after {timeout} s\n{self.logs()}") from exc
        if res.returncode != 0:
            raise SlurmError(
                f"{' '.join(cmd)} failed with exit code {res.returncode}\nstdout: {res.stdout}\n"
                f"stderr: {res.stderr}\n{self.logs()}"
            )
        return res.stdout

    def _try_run(self, cmd: list[str]) -> str | None:
        try:
            res = subprocess.run(
                cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            return None
        return res.stdout if res.returncode == 0 else None

    def _check_daemons_alive(self) -> None:
        dead = {n: p.returncode for n, p in self._procs.items() if p.poll() is not None}
        if dead:
            raise SlurmError(f"daemon(s) exited: {dead}\n{self.logs()}")

    def _wait_until(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._check_daemons_alive()
            if time.monotonic() > deadline:
                raise SlurmError(f"{what} within {timeout} s\n{self.logs()}")
            time.sleep(0.2)
