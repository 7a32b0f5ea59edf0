"""Multi-process start-up flags and cluster detection (the 2-process run is test_multi_process)."""

from __future__ import annotations

import pytest

from ldm_jax.parallel import distributed


def test_partial_flags_are_refused_naming_all_three():
    with pytest.raises(ValueError, match="--coordinator_address, --num_processes and --process_id"):
        distributed.initialize("127.0.0.1:1234", 2, None)
    with pytest.raises(ValueError, match="--process_id=2 must be in"):
        distributed.initialize("127.0.0.1:1234", 2, 2)


def test_no_flags_and_no_cluster_stays_single_process(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_STEP_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.initialize()


@pytest.mark.parametrize(
    "env, detected",
    [
        ({"SLURM_NTASKS": "4"}, False),  # An allocation without srun: one lone process.
        ({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"}, True),
        ({"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"TPU_WORKER_HOSTNAMES": "t1,t2"}, True),
        ({"TPU_WORKER_HOSTNAMES": "t1"}, False),
    ],
)
def test_cluster_detection(monkeypatch, env, detected):
    for name in ("SLURM_NTASKS", "SLURM_STEP_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.detected_cluster() is detected
