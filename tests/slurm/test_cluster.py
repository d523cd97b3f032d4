"""Tier 4 (real services): a real Slurm cluster on this machine runs real sbatch jobs.

These pin the Slurm behaviour the trainer's launch scripts rely on (docs/DESIGN.md §6):
``srun`` task ids, multi-node environment and rendezvous on the first host of the node list,
signal delivery to a batch script that traps SIGTERM (preemption save), requeue with
``SLURM_RESTART_COUNT``, and a teardown that leaves none of our processes behind.
Cost: one cluster bring-up per node count per session, then a few seconds per job.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from .cluster import LocalSlurmCluster, parse_scontrol_record

pytestmark = pytest.mark.slurm


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body.lstrip())
    path.chmod(0o755)
    return path


def _wait_for_file(path: Path, timeout: float, cluster: LocalSlurmCluster, job_id: int) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if time.monotonic() > deadline:
            info = cluster.job_info(job_id)
            raise AssertionError(f"{path} not written after {timeout} s; job: {info}\n{cluster.logs()}")
        time.sleep(0.1)
    return path.read_text()


def _fields(text: str) -> list[dict[str, str]]:
    """Lines of ``key=value key=value`` into dicts (the jobs below print that format)."""
    return [dict(kv.split("=", 1) for kv in line.split()) for line in text.splitlines() if "=" in line]


def test_parse_scontrol_record_keeps_spaces_and_odd_keys() -> None:
    line = "JobId=7 JobName=a b JobState=PENDING Reason=BeginTime Socks/Node=* Comment=x=y z ExitCode=0:0\n"
    assert parse_scontrol_record(line) == {
        "JobId": "7",
        "JobName": "a b",
        "JobState": "PENDING",
        "Reason": "BeginTime",
        "Socks/Node": "*",
        "Comment": "x=y z",
        "ExitCode": "0:0",
    }


def test_srun_two_tasks_on_one_node(slurm_cluster_1node: LocalSlurmCluster, tmp_path: Path) -> None:
    script = _script(
        tmp_path / "tasks.sbatch",
        f"""
#SBATCH --ntasks=2
#SBATCH --output={tmp_path}/%j.out
srun bash -c 'echo "procid=$SLURM_PROCID ntasks=$SLURM_NTASKS node=$SLURMD_NODENAME"'
""",
    )
    job = slurm_cluster_1node.submit(script)
    info = slurm_cluster_1node.wait(job, timeout=60)
    out = slurm_cluster_1node.read_output(info)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert info["StdOut"] == f"{tmp_path}/{job}.out"
    rows = _fields(out)
    assert sorted(r["procid"] for r in rows) == ["0", "1"], out
    assert {(r["ntasks"], r["node"]) for r in rows} == {("2", "n1")}, out


# Task 0 listens on the first host of the node list, task 1 connects to it: the same
# MASTER_ADDR pattern torchrun/torch.distributed use, minus torch.
_RENDEZVOUS = """
import os, socket, subprocess, sys, time
hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_NODELIST"]],
                       capture_output=True, text=True, check=True).stdout.split()
master, port, rank = hosts[0], int(os.environ["RDZV_PORT"]), int(os.environ["SLURM_PROCID"])
if rank == 0:
    srv = socket.create_server((master, port))
    srv.settimeout(30)
    conn, _ = srv.accept()
    peer = conn.recv(64).decode()
else:
    for _ in range(300):
        try:
            conn = socket.create_connection((master, port), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    conn.sendall(f"hello-from-{os.environ['SLURMD_NODENAME']}".encode())
    peer = "sent"
print(f"procid={rank} nodeid={os.environ['SLURM_NODEID']} node={os.environ['SLURMD_NODENAME']} "
      f"nodelist={os.environ['SLURM_NODELIST']} master={master} "
      f"master_ip={socket.gethostbyname(master)} launch_ip={os.environ.get('SLURM_LAUNCH_NODE_IPADDR')} "
      f"peer={peer}", flush=True)
"""


def test_two_nodes_env_and_rendezvous(slurm_cluster_2nodes: LocalSlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "rdzv.py").write_text(_RENDEZVOUS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = _script(
        tmp_path / "two_nodes.sbatch",
        f"""
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --output={tmp_path}/%j.out
srun {sys.executable} {tmp_path}/rdzv.py
""",
    )
    job = slurm_cluster_2nodes.submit(script, env={"RDZV_PORT": str(port)})
    info = slurm_cluster_2nodes.wait(job, timeout=60)
    out = slurm_cluster_2nodes.read_output(info)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert info["NodeList"] == "n[1-2]"
    rows = sorted(_fields(out), key=lambda r: r["procid"])
    assert [(r["procid"], r["nodeid"], r["node"]) for r in rows] == [("0", "0", "n1"), ("1", "1", "n2")], out
    assert {r["nodelist"] for r in rows} == {"n[1-2]"}
    assert {r["master"] for r in rows} == {"n1"}
    assert {r["master_ip"] for r in rows} == {"127.0.0.1"}
    assert rows[0]["peer"] == "hello-from-n2", out


def test_sigterm_reaches_srun_tasks_not_batch_shell(
    slurm_cluster_1node: LocalSlurmCluster, tmp_path: Path
) -> None:
    """The preemption path for an ``srun``-launched trainer: ``scancel --signal=TERM`` runs the
    task's SIGTERM trap (where the trainer will save), while the batch shell is not signalled."""
    step = _script(
        tmp_path / "step.sh",
        f"""
trap 'echo "step-term procid=$SLURM_PROCID" > {tmp_path}/step.marker; exit 0' TERM
echo ready > {tmp_path}/step.ready
sleep 120 & wait $!
""",
    )
    script = _script(
        tmp_path / "trap.sbatch",
        f"""
#SBATCH --ntasks=1
#SBATCH --output={tmp_path}/%j.out
trap 'echo batch-term > {tmp_path}/batch.marker' TERM
srun {step}
echo "batch shell went on, srun rc=$?"
""",
    )
    cluster = slurm_cluster_1node
    job = cluster.submit(script)
    _wait_for_file(tmp_path / "step.ready", 30, cluster, job)
    cluster.cancel(job, signal="TERM")
    assert _wait_for_file(tmp_path / "step.marker", 15, cluster, job).strip() == "step-term procid=0"
    info = cluster.wait(job, timeout=30)
    out = cluster.read_output(info)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert "batch shell went on, srun rc=0" in out
    assert not (tmp_path / "batch.marker").exists()


def test_sigterm_with_batch_flag_runs_batch_script_trap(
    slurm_cluster_1node: LocalSlurmCluster, tmp_path: Path
) -> None:
    """A trap in the batch script itself needs ``scancel --batch`` (or ``--full``)."""
    script = _script(
        tmp_path / "trap.sbatch",
        f"""
#SBATCH --output={tmp_path}/%j.out
trap 'echo "batch-term" > {tmp_path}/batch.marker; exit 0' TERM
echo ready > {tmp_path}/ready
sleep 120 & wait $!
echo "finished without signal"
""",
    )
    cluster = slurm_cluster_1node
    job = cluster.submit(script)
    _wait_for_file(tmp_path / "ready", 30, cluster, job)
    cluster.cancel(job, signal="TERM", batch=True)
    assert _wait_for_file(tmp_path / "batch.marker", 15, cluster, job).strip() == "batch-term"
    info = cluster.wait(job, timeout=30)
    out = cluster.read_output(info)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", out
    assert "finished without signal" not in out


def test_full_flag_makes_srun_kill_its_step(slurm_cluster_1node: LocalSlurmCluster, tmp_path: Path) -> None:
    """Why ``cancel(..., full=True)`` is wrong for srun-launched trainers: ``--full`` also signals
    the ``srun`` client, which then aborts its step with SIGKILL, so the task's trap never runs."""
    step = _script(
        tmp_path / "step.sh",
        f"""
trap 'echo step-term > {tmp_path}/step.marker; exit 0' TERM
echo ready > {tmp_path}/step.ready
sleep 120 & wait $!
""",
    )
    script = _script(
        tmp_path / "full.sbatch",
        f"""
#SBATCH --ntasks=1
#SBATCH --output={tmp_path}/%j.out
trap 'echo batch-term > {tmp_path}/batch.marker' TERM
srun {step} &
wait $!
wait $!
echo "srun rc=$?"
""",
    )
    cluster = slurm_cluster_1node
    job = cluster.submit(script)
    _wait_for_file(tmp_path / "step.ready", 30, cluster, job)
    cluster.cancel(job, signal="TERM", full=True)
    info = cluster.wait(job, timeout=30)
    out = cluster.read_output(info)
    assert (tmp_path / "batch.marker").exists(), out
    assert not (tmp_path / "step.marker").exists(), out
    assert "srun rc=0" not in out and "srun rc=" in out, out


def test_requeued_job_runs_again(slurm_cluster_1node: LocalSlurmCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs.log"
    script = _script(
        tmp_path / "requeue.sbatch",
        f"""
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={tmp_path}/%j.out
echo "restart_count=${{SLURM_RESTART_COUNT:-unset}} job=$SLURM_JOB_ID" >> {runs}
if [ -z "$SLURM_RESTART_COUNT" ] || [ "$SLURM_RESTART_COUNT" = 0 ]; then
    sleep 120 & wait $!
fi
""",
    )
    cluster = slurm_cluster_1node
    job = cluster.submit(script)
    _wait_for_file(runs, 30, cluster, job)
    cluster.requeue(job)
    # Slurm holds a requeued job for cred_expire + 1 s before starting it again.
    info = cluster.wait(job, timeout=30 + cluster.cred_expire_s)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", info
    rows = _fields(runs.read_text())
    assert [r["restart_count"] for r in rows] in (["unset", "1"], ["0", "1"]), rows
    assert {r["job"] for r in rows} == {str(job)}


def test_close_stops_only_and_all_of_our_processes(tmp_path: Path) -> None:
    """A private cluster with a job still running: close() leaves none of its processes, twice over."""
    cluster = LocalSlurmCluster(num_nodes=1)
    try:
        cluster.start()
    except Exception:
        cluster.close()
        raise
    try:
        pids = cluster.pids
        assert set(pids) == {"munged", "slurmctld", "slurmd-n1"}
        script = _script(
            tmp_path / "long.sbatch",
            f"""
#SBATCH --output={tmp_path}/%j.out
echo $$ > {tmp_path}/job.pid
sleep 300
""",
        )
        job = cluster.submit(script)
        job_pid = int(_wait_for_file(tmp_path / "job.pid", 30, cluster, job))
        strays = set(cluster.stray_pids())
        assert set(pids.values()) | {job_pid} <= strays, (pids, job_pid, strays)
        root, conf = cluster.root, cluster.conf_path
    finally:
        cluster.close()
    cluster.close()  # idempotent
    for name, pid in [*pids.items(), ("job", job_pid)]:
        assert not _alive(pid), f"{name} (pid {pid}) survived close()"
    assert cluster.stray_pids() == []
    assert not root.exists() and not conf.exists()
    with open("/etc/hosts") as f:
        assert str(root) not in f.read()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
