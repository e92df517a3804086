"""Where a multi-worker step's worker pods run: the ``worker_placement`` JSON, read once.

The pipeline compiles it from its CompileOptions (``tbpipe.pipelines.placement.worker_placement``)
into a constant input of train and finetune; the step hands it to ``launch_workers``. No heavy
imports: compiling reads this module.
"""

from __future__ import annotations

import dataclasses
import json

from tbpipe.components.common.errors import InputError

#: The engines that can run the workers: JobSet (jobset.x-k8s.io, what Kubeflow Trainer v2
#: runs on) and TFJob (kubeflow.org/v1, the Training Operator v1).
ENGINES = ("jobset", "tfjob")
#: The port every worker's gRPC server listens on (TFJob's default port too).
WORKER_PORT = 2222


@dataclasses.dataclass(frozen=True)
class WorkerPlacement:
    """The worker pods' image, GPUs, node selectors, resources and the engine's limits.

    Attributes:
        image: The image of every worker (the step's own).
        engine: ``jobset`` or ``tfjob``.
        gpu_count: GPUs per worker (``nvidia.com/gpu``); 0: none, no GPU selector/toleration.
        gpu_type: The GPU node label's value (e.g. ``nvidia-tesla-t4``).
        gpu_node_selector_key: The node label naming the GPU model; empty: none.
        node_selectors: More ``(key, value)`` node labels.
        cpu_request: CPU request per worker (a Kubernetes quantity; empty: none).
        cpu_limit: CPU limit per worker.
        memory_request: Memory request per worker.
        memory_limit: Memory limit per worker.
        run_as_user: The image's non-root user (and group).
        volumes: ``(claim, mount path)`` PersistentVolumeClaims each worker mounts.
        max_restarts: Restarts of the whole set after a worker is lost (JobSet failure
            policy ``maxRestarts``, TFJob ``backoffLimit``).
        deadline_s: Seconds the step waits for its workers before it deletes them and fails.
        pending_timeout_s: Seconds a worker may stay unschedulable or unable to pull its
            image before the step deletes the set and fails.

    """

    image: str
    engine: str = ENGINES[0]
    gpu_count: int = 0
    gpu_type: str = ""
    gpu_node_selector_key: str = ""
    node_selectors: tuple[tuple[str, str], ...] = ()
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    run_as_user: int = 1000
    volumes: tuple[tuple[str, str], ...] = ()
    max_restarts: int = 3
    deadline_s: int = 24 * 3600
    pending_timeout_s: int = 900

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_selectors",
                           tuple((str(k), str(v)) for k, v in self.node_selectors))
        object.__setattr__(self, "volumes", tuple((str(c), str(p)) for c, p in self.volumes))
        if not self.image:
            raise InputError("worker_placement: no image; compile the pipeline again")
        if self.engine not in ENGINES:
            raise InputError(f"worker_placement: engine {self.engine!r} is not one of "
                             f"{', '.join(ENGINES)}; use --distributed-engine jobset or tfjob")
        for name in ("gpu_count", "max_restarts"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InputError(f"worker_placement: {name}={getattr(self, name)!r} must be an "
                                 "integer >= 0")
        for name, least in (("deadline_s", 1), ("pending_timeout_s", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < least:
                raise InputError(f"worker_placement: {name}={getattr(self, name)!r} must be a "
                                 f"whole number of seconds >= {least}")

    def to_json(self) -> str:
        """The compact JSON the pipeline passes to the step (keys sorted: a stable YAML)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerPlacement:
        """Parse ``worker_placement``; InputError (one line) if it is not what tbpipe compiles."""
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise InputError(f"worker_placement is not JSON ({exc}); compile the pipeline "
                             "again with tbpipe") from None
        if not isinstance(values, dict):
            raise InputError("worker_placement must be a JSON object; compile the pipeline "
                             "again with tbpipe")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"worker_placement: unknown key {unknown[0]!r} (compiled by "
                             "another tbpipe version?); compile the pipeline again")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise InputError(f"worker_placement: {exc}; compile the pipeline again") from None
