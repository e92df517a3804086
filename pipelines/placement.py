"""Where each step runs: image, GPUs, node selectors, tolerations, resources, retries, caching.

The steps' own declarations (``components/<step>/step.py``, read through
:mod:`tbpipe.components.registry`) say which kind each task is, which get GPUs and their
default resources; this module keeps no table of steps. :func:`place_task` puts GPUs, node
selectors, the GPU toleration and CPU/memory on any task, tbpipe's or one of your own
pipeline's; :func:`configure_task` applies a whole :class:`CompileOptions` to one of tbpipe's
tasks. The image is set per task with ``PipelineTask.set_container_image`` (it overrides the
component's import-time ``base_image`` in the compiled spec), so ``--registry`` and
``--no-gpu`` change the YAML without re-importing the components.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from tbpipe.components._image import image
from tbpipe.components.common.errors import InputError
from tbpipe.components.registry import step_named, steps
from tbpipe.components.training.launcher.placement import ENGINES, WorkerPlacement

GPU_RESOURCE = "nvidia.com/gpu"  # the Kubernetes extended resource the KFP driver limits
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
DEFAULT_GPU_TYPE = "nvidia-tesla-t4"
IMAGE_UID = 1000  # the tbpipe user of docker/Dockerfile
#: The kinds of step that get GPUs (and retries, and training's caching): the steps' own say.
GPU_STEPS = tuple(step.name for step in steps() if step.gpu)
#: Where ``--log-volume`` / ``--data-volume`` claims are mounted in every step (and in the
#: TensorBoard of deploy/tensorboard/overlays/pvc): fixed, so the paths below are known.
LOG_VOLUME_MOUNT = "/mnt/tbpipe-logs"
DATA_VOLUME_MOUNT = "/mnt/tbpipe-data"
#: The compiled ``log_root`` default with ``--log-volume`` (checkpoints go beside it, on
#: the same claim: ``/mnt/tbpipe-logs/logs-checkpoints``).
VOLUME_LOG_ROOT = f"{LOG_VOLUME_MOUNT}/logs"
#: A PersistentVolumeClaim's name: a DNS-1123 subdomain.
PVC_NAME = re.compile(r"^(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                      r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
QUANTITY_PATTERNS = MappingProxyType({
    "cpu": re.compile(r"^([0-9]*[.])?[0-9]+m?\Z"),
    "memory": re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?\Z"),
})
MEMORY_UNITS = MappingProxyType({
    "": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
})


def is_quantity(kind: str, text: str) -> bool:
    """Whether ``text`` is a Kubernetes ``cpu`` or ``memory`` quantity (``500m``, ``4Gi``)."""
    return QUANTITY_PATTERNS[kind].match(text) is not None


def amount(kind: str, quantity: str) -> float:
    """Convert a well-formed ``cpu``/``memory`` quantity to cores/bytes (``500m`` -> 0.5)."""
    if kind == "cpu":
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    number, unit = re.match(r"^([0-9]+)(\D*)\Z", quantity).groups()
    return float(number) * MEMORY_UNITS[unit]


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory requests/limits of one kind of step (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def validate(self, step: str) -> Resources:
        """Check the quantities' format and that no request exceeds its limit."""
        for kind, example in (("cpu", "500m or 2"), ("memory", "512Mi or 4Gi")):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            for value in (request, limit):
                if not is_quantity(kind, value):
                    raise InputError(f"--{kind} {step}: {value!r} is not a Kubernetes {kind} "
                                     f"quantity (e.g. {example})")
            if amount(kind, request) > amount(kind, limit):
                raise InputError(f"--{kind} {step}: request {request} exceeds limit {limit}")
        return self


#: Default requests/limits per kind of step, as each step declares them (sized to fit a GKE
#: n1-standard-4 + T4 node, about 3.9 CPU / 12 GiB allocatable, or an e2-standard-4).
DEFAULT_RESOURCES = MappingProxyType({
    step.name: Resources(*step.cpu, *step.memory) for step in steps() if step.cpu})


def place_task(task, *, gpu_count: int = 0, gpu_type: str = DEFAULT_GPU_TYPE,  # noqa: ANN001, ANN201
               gpu_node_selector_key: str = GKE_ACCELERATOR_LABEL,
               node_selectors: Mapping[str, str] | Iterable[tuple[str, str]] = (),
               resources: Resources | None = None):
    """Put GPUs, node selectors, the GPU toleration and CPU/memory on any pipeline task.

    For a task of your own pipeline as for tbpipe's::

        trained = my_train_op(...)
        place_task(trained, gpu_count=1, gpu_type="nvidia-l4",
                   resources=Resources("4", "8", "16Gi", "24Gi"))

    Args:
        task: A ``PipelineTask`` (a component called inside a ``@dsl.pipeline``).
        gpu_count: GPUs to limit the task to (``nvidia.com/gpu``); 0: none, and no GPU
            node selector or toleration.
        gpu_type: The GPU model, the value of the GPU node label.
        gpu_node_selector_key: The node label that names the GPU model
            (GKE: ``cloud.google.com/gke-accelerator``); empty: no GPU node selector.
        node_selectors: More node labels the task's node must have.
        resources: CPU and memory requests and limits (None: leave them as they are).

    Returns:
        The task.

    """
    from kfp import kubernetes

    if gpu_count < 0:
        raise InputError(f"gpu_count={gpu_count}: must be 0 (no GPU) or more")
    if gpu_count:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpu_count)
        kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists",
                                  effect="NoSchedule")
    labels = {gpu_node_selector_key: gpu_type} if gpu_count and gpu_node_selector_key else {}
    labels.update(dict(node_selectors))
    for key, value in labels.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    if resources is not None:
        resources.validate(task.name)
        task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
        task.set_memory_request(resources.memory_request)
        task.set_memory_limit(resources.memory_limit)
    return task


#: The keys ``--secret NAME`` exposes (as environment variables of the same names) when it
#: names none, each optional (a Secret without one is fine): S3/MinIO credentials and
#: endpoint, the SMTP login of ``--notify mailto:``, a webhook URL for ``--notify
#: env:TBPIPE_WEBHOOK_URL``. GCS: workload identity, or ``--secret NAME:KEY`` of your own.
DEFAULT_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                       "TBPIPE_SMTP_USER", "TBPIPE_SMTP_PASSWORD", "TBPIPE_WEBHOOK_URL")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class SecretEnv:
    """A Kubernetes Secret whose keys every step gets as environment variables (``--secret``).

    Attributes:
        name: The Secret's name (in the run's namespace).
        keys: The keys to expose, each as the variable of its name, required (a Secret
            without one stops the pod); empty: DEFAULT_SECRET_KEYS, each optional.

    """

    name: str
    keys: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SecretEnv:
        """``NAME`` or ``NAME:KEY1,KEY2``; InputError (one line) if it is neither."""
        name, colon, keys = text.partition(":")
        if not PVC_NAME.match(name.strip()):  # a Secret's name is a DNS subdomain too
            raise InputError(f"--secret {text}: {name!r} is not a Secret name: use lower-case "
                             "letters, digits, '-' and '.' (e.g. --secret tbpipe-creds)")
        parsed = tuple(key.strip() for key in keys.split(",") if key.strip())
        bad = [key for key in parsed if not _ENV_KEY.match(key)]
        if bad or (colon and not parsed):
            raise InputError(f"--secret {text}: keys must be environment variable names "
                             "separated by commas (NAME:AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY)")
        return cls(name.strip(), parsed)

    def env(self) -> tuple[dict[str, str], bool]:
        """``({key: variable}, optional)`` for ``kfp.kubernetes.use_secret_as_env``."""
        keys = self.keys or DEFAULT_SECRET_KEYS
        return {key: key for key in keys}, not self.keys


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """How tbpipe's pipeline is compiled (not run-time parameters).

    Attributes:
        image_registry: Registry of the component images (default: ``TBPIPE_IMAGE_REGISTRY``
            or ``localhost``, see components/_image.py).
        gpu: Give train and finetune GPUs; False compiles a CPU-only pipeline.
        gpu_type: The GPU model, the default value of the GPU node selector.
        gpu_count: GPUs per training step.
        gpu_node_selector_key: Node label selecting GPU nodes; empty: no GPU node selector.
        gpu_node_selector_value: Its value (default: ``gpu_type``).
        node_selectors: More ``(key, value)`` node selectors for train and finetune.
        resources: Requests/limits per kind of step, over DEFAULT_RESOURCES.
        retries: Retries of train and finetune after a failure (0: none).
        retry_backoff: Wait before the first retry (e.g. ``60s``).
        retry_backoff_factor: Each further wait is this many times longer.
        cache_preprocess: Let KFP reuse preprocess results.
        cache_training: Let KFP reuse train/finetune results (off: always train).
        log_volume: A PersistentVolumeClaim mounted at LOG_VOLUME_MOUNT in every step; the
            compiled ``log_root`` then defaults to VOLUME_LOG_ROOT (empty: no volume).
        data_volume: A PersistentVolumeClaim mounted at DATA_VOLUME_MOUNT in every step, for
            ``data=/mnt/tbpipe-data/...`` (empty: no volume); not the log volume's claim
            (data on that one is simply a path under LOG_VOLUME_MOUNT).
        distributed_engine: What starts a multi-worker step's workers on a cluster:
            ``jobset`` or ``tfjob`` (see :func:`worker_placement`).
        worker_deadline: Seconds a multi-worker step waits for its workers.
        workers: The compiled default of the pipeline's ``workers`` parameter (``compile
            --workers``; None: the table's; checked where the train config is built).
        notify: ``--notify`` targets (separated by spaces): compile the ``notify`` exit task
            (a ``dsl.ExitHandler`` around the DAG, sending the outcome to the ``notify``
            parameter's targets) with these as that parameter's default; empty: no exit
            task, the DAG as without notifications.
        secrets: Secrets every step gets as environment variables (``--secret``).

    """

    image_registry: str | None = None
    gpu: bool = True
    gpu_type: str = DEFAULT_GPU_TYPE
    gpu_count: int = 1
    gpu_node_selector_key: str = GKE_ACCELERATOR_LABEL
    gpu_node_selector_value: str | None = None
    node_selectors: tuple[tuple[str, str], ...] = ()
    resources: Mapping[str, Resources] = dataclasses.field(default_factory=dict)
    retries: int = 2
    retry_backoff: str = "60s"
    retry_backoff_factor: float = 2.0
    cache_preprocess: bool = True
    cache_training: bool = False
    log_volume: str = ""
    data_volume: str = ""
    distributed_engine: str = WorkerPlacement.engine
    worker_deadline: int = WorkerPlacement.deadline_s
    workers: int | None = None
    notify: str = ""
    secrets: tuple[SecretEnv, ...] = ()

    def __post_init__(self) -> None:
        if self.distributed_engine not in ENGINES:
            raise InputError(f"--distributed-engine {self.distributed_engine!r}: use one of "
                             f"{', '.join(ENGINES)}")
        if self.worker_deadline < 1:
            raise InputError(f"--worker-deadline must be >= 1 second (got {self.worker_deadline})")
        for flag, claim in (("--log-volume", self.log_volume), ("--data-volume", self.data_volume)):
            if claim and not PVC_NAME.match(claim):
                raise InputError(f"{flag} {claim!r} is not a PersistentVolumeClaim name: use "
                                 "lower-case letters, digits, '-' and '.' (e.g. tbpipe-logs)")
        if self.data_volume and self.data_volume == self.log_volume:
            raise InputError(f"--data-volume {self.data_volume} is the --log-volume claim already: "
                             f"drop --data-volume and pass data={LOG_VOLUME_MOUNT}/...")
        if self.gpu_count < 1:
            raise InputError(f"--gpu-count must be >= 1 (got {self.gpu_count}); "
                             "use --no-gpu for a CPU-only pipeline")
        if self.retries < 0:
            raise InputError(f"--retries must be >= 0 (got {self.retries})")
        if not re.match(r"^[0-9]+(\.[0-9]+)?s\Z", self.retry_backoff):
            raise InputError("--retry-backoff must be seconds like 60s "
                             f"(got {self.retry_backoff!r})")
        unknown = sorted(set(self.resources) - set(DEFAULT_RESOURCES))
        if unknown:
            raise InputError(f"unknown step kind {unknown[0]!r} in resources: use one of "
                             f"{', '.join(DEFAULT_RESOURCES)}")
        merged = {**DEFAULT_RESOURCES, **self.resources}
        for kind, resources in merged.items():
            resources.validate(kind)
        object.__setattr__(self, "resources", MappingProxyType(merged))
        if self.notify:
            from tbpipe.components.notification.config import NotifyConfig

            NotifyConfig(self.notify)  # SettingError naming the bad target
        if self.workers is not None:
            from tbpipe.components.common.errors import SettingError
            from tbpipe.components.training.config import TrainConfig

            try:
                TrainConfig(workers=self.workers)
            except SettingError as exc:
                raise SettingError("--workers", exc.value, exc.rule) from None

    @property
    def default_log_root(self) -> str:
        """The compiled ``log_root`` default: a path on the log volume, else empty."""
        return VOLUME_LOG_ROOT if self.log_volume else ""

    def volume_mounts(self) -> tuple[tuple[str, str], ...]:
        """``(claim, mount path)`` of every volume each step mounts."""
        return tuple((claim, path) for claim, path in ((self.log_volume, LOG_VOLUME_MOUNT),
                                                       (self.data_volume, DATA_VOLUME_MOUNT))
                     if claim)

    def image_for(self, kind: str) -> str:
        """Return the image of a kind of step: GPU for train/finetune when ``gpu``, else CPU."""
        return image("gpu" if self.gpu and kind in GPU_STEPS else "cpu", self.image_registry)

    def caching_for(self, kind: str) -> bool:
        """Whether KFP may reuse a cached result of a kind of step."""
        if kind in GPU_STEPS:
            return self.cache_training
        return self.cache_preprocess if kind == "preprocess" else True


def step_kind(step: str) -> str:
    """The kind of step of a task name (``evaluate-finetuned`` -> ``evaluate``).

    The step that declares the name says (its ``resources_of`` where it shares a profile).
    """
    declared = step_named(step)
    return declared.resources_of or declared.name


def configure_task(task, step: str, options: CompileOptions):  # noqa: ANN001, ANN201
    """Apply image, GPUs, node selectors, tolerations, resources, retries, caching, volumes.

    Args:
        task: One of tbpipe's ``PipelineTask``s.
        step: Its display name, as a step declares it (``display_names``).
        options: What to apply.

    Returns:
        The task, configured.

    """
    from kfp import kubernetes

    kind = step_kind(step)
    task.set_container_image(options.image_for(kind))
    gpu_step = kind in GPU_STEPS
    place_task(task, gpu_count=options.gpu_count if gpu_step and options.gpu else 0,
               gpu_type=options.gpu_node_selector_value or options.gpu_type,
               gpu_node_selector_key=options.gpu_node_selector_key,
               node_selectors=options.node_selectors if gpu_step else (),
               resources=options.resources[kind])
    if gpu_step and options.retries:
        task.set_retry(num_retries=options.retries, backoff_duration=options.retry_backoff,
                       backoff_factor=options.retry_backoff_factor)
    task.set_caching_options(options.caching_for(kind))
    # the images' non-root tbpipe user; kfp-kubernetes has no read-only root file system knob
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID,
                                    run_as_non_root=True)
    for claim, mount_path in options.volume_mounts():
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=mount_path)
    for secret in options.secrets:  # the spec names the Secret and its keys, never a value
        env, optional = secret.env()
        kubernetes.use_secret_as_env(task, secret.name, env, optional=optional)
    return task


def worker_placement(options: CompileOptions, step: str) -> str:
    """The ``worker_placement`` JSON of a train/finetune step: its workers' pods and engine.

    The same image, GPUs, node selectors, toleration, CPU/memory, user and volumes as the
    step's own pod (:func:`configure_task`), and ``options.distributed_engine``; the step
    hands it to ``tbpipe.components.training.launcher.launch_workers``.
    """
    kind = step_kind(step)
    resources = options.resources[kind]
    gpu_count = options.gpu_count if options.gpu and kind in GPU_STEPS else 0
    return WorkerPlacement(
        image=options.image_for(kind), engine=options.distributed_engine, gpu_count=gpu_count,
        gpu_type=(options.gpu_node_selector_value or options.gpu_type) if gpu_count else "",
        gpu_node_selector_key=options.gpu_node_selector_key if gpu_count else "",
        node_selectors=options.node_selectors if kind in GPU_STEPS else (),
        cpu_request=resources.cpu_request, cpu_limit=resources.cpu_limit,
        memory_request=resources.memory_request, memory_limit=resources.memory_limit,
        run_as_user=IMAGE_UID, volumes=options.volume_mounts(),
        deadline_s=options.worker_deadline).to_json()
