"""Claiming a run's folder before any step writes into it, so two runs never share one.

``{log_root}/{experiment}/{run}/_run.json`` is created once (``storage.create_bytes``: a
hard link locally, the store's conditional write on gs://, s3:// and az://, all atomic; on a
store without one, a check then a write) and names its owner: the
local ``tbpipe run`` that claimed it, or the KFP job whose first step did. A step of the same
owner (every step of one job, a retried step, a retry of the job) passes; anyone else is
refused with one line, unless it asks to resume the run, which takes the claim over.
"""

from __future__ import annotations

import json

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.common.limits import MAX_METADATA_BYTES
from tbpipe.components.common.naming import job_of, validate_name

RUN_MARKER = "_run.json"


def run_owner(job_name: str, output_uri: str) -> str:
    """Who a step claims its run for: its KFP job (``naming.job_of``)."""
    return job_of(job_name, output_uri) or "unknown-job"


def claim_run(log_root: str, experiment: str, run: str, owner: str,
              resume: bool = False) -> None:
    """Claim ``{log_root}/{experiment}/{run}`` for ``owner`` (passes if it holds it already).

    Args:
        log_root: The shared TensorBoard root (a folder or a store URI: gs://, s3://, az://...).
        experiment: The experiment folder (validated).
        run: The run's name (validated).
        owner: Who runs it: a KFP job's name, or a local run's id.
        resume: Continue a run another owner claimed (interrupted or finished): take the
            claim over instead of refusing.

    Raises:
        InputError: the run belongs to another owner and ``resume`` is False.

    """
    marker = storage.join(log_root, validate_name("experiment", experiment),
                          validate_name("run", run), RUN_MARKER)
    mine = json.dumps({"owner": owner}, sort_keys=True).encode()
    try:
        storage.create_bytes(marker, mine)  # returns when the same owner's claim is there
        return
    except StorageError:
        if not storage.exists(marker):
            raise
    # at most MAX_METADATA_BYTES of it (a bigger one reads as an unreadable claim)
    holder = _holder(storage.read_bytes(marker, max_bytes=MAX_METADATA_BYTES))
    if holder == owner:
        return
    if not resume:
        raise InputError(f"run {experiment}/{run} already exists in {log_root} (claimed by "
                         f"{holder}): pick another --run-name, or pass --resume to continue it")
    storage.write_bytes(marker, mine)
    print(f"resuming run {experiment}/{run} (claimed by {holder} before)", flush=True)


def _holder(data: bytes) -> str:
    try:
        return str(json.loads(data)["owner"])
    except (ValueError, KeyError, TypeError):
        return "an unreadable claim"
