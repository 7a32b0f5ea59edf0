"""Multi-process start-up: `jax.distributed.initialize`, explicit or detected from the cluster.

Every process runs the same command on its own host (or, for testing, on one machine):

  python -m ldm_jax.train --config ... --workdir SHARED_DIR \
      --coordinator_address=HOST:PORT --num_processes=N --process_id=I

On Cloud TPU pods and SLURM/Open MPI jobs the three values are detected by JAX itself; pass
none of them there. The workdir must be a folder every process can read and write.
"""

from __future__ import annotations

import os

import jax


def detected_cluster() -> bool:
    """Whether the environment is a multi-process job that JAX can configure by itself.

    A SLURM allocation counts only inside a job step (`srun`), so a lone Python started in an
    allocation does not wait for processes that never come.
    """
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_STEP_ID" in os.environ:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins the multi-process runtime when asked or detected; returns whether it did.

    Raises:
      ValueError: naming the flags when only some of the three explicit values are given.
    """
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ValueError(
                "--coordinator_address, --num_processes and --process_id go together: set all "
                "three (e.g. --coordinator_address=10.0.0.1:1234 --num_processes=2 "
                "--process_id=0), or none on TPU pods and SLURM where JAX detects them."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"--process_id={process_id} must be in [0, --num_processes={num_processes})."
            )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    if detected_cluster():
        jax.distributed.initialize()
        return True
    return False
