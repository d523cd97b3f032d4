"""Fixtures for tier-4 tests against a real local Slurm cluster (see cluster.py, README.md).

Each cluster is brought up once per session (install on a fresh machine ~10 s, start < 2 s)
and shared; the function-scoped fixtures hand it to a test and kill whatever jobs the test
left behind, so one failing test cannot starve the next of CPUs.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from .cluster import LocalSlurmCluster, SlurmUnavailable


def _start(num_nodes: int) -> LocalSlurmCluster:
    cluster = LocalSlurmCluster(num_nodes=num_nodes)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no local Slurm: {exc}")
    return cluster


def _drain(cluster: LocalSlurmCluster) -> None:
    if not cluster.cancel_all_jobs(timeout=15.0):
        raise RuntimeError(f"jobs left by the test would not go away\n{cluster.logs()}")


@pytest.fixture(scope="session")
def _slurm_session_1node() -> Iterator[LocalSlurmCluster]:
    cluster = _start(1)
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def _slurm_session_2nodes() -> Iterator[LocalSlurmCluster]:
    cluster = _start(2)
    yield cluster
    cluster.close()


@pytest.fixture
def slurm_cluster_1node(_slurm_session_1node: LocalSlurmCluster) -> Iterator[LocalSlurmCluster]:
    """A one-node cluster (node ``n1``), shared by the session; jobs are killed after each test."""
    yield _slurm_session_1node
    _drain(_slurm_session_1node)


@pytest.fixture
def slurm_cluster_2nodes(_slurm_session_2nodes: LocalSlurmCluster) -> Iterator[LocalSlurmCluster]:
    """A two-node cluster (``n1``, ``n2``, both on localhost), shared by the session."""
    yield _slurm_session_2nodes
    _drain(_slurm_session_2nodes)
