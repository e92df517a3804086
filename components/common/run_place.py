"""Where a run's steps log: one value, one default per part, checked once; the step preamble.

Every step logs under ``{log_root}/{experiment}/{run}/{step}`` (:mod:`.naming`). The five
parts that say where (``log_root``, ``experiment``, ``run_name``, ``resume``, ``job_name``)
are one :class:`RunPlace`, built the same way by the CLI (from the pipeline parameters) and
by every step (:func:`step_run`, the one-line preamble of each component: the run's place,
its claim, the one-line error exit).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from tbpipe.components.common.errors import InputError, exit_on_error
from tbpipe.components.common.naming import (
    checkpoint_dir_for,
    resolve_run,
    step_log_dir,
    validate_name,
)
from tbpipe.components.common.params import Param, ParamGroup

#: The experiment a run goes to unless told otherwise.
DEFAULT_EXPERIMENT = "default"


@dataclasses.dataclass(frozen=True)
class RunPlace:
    """Where a run logs, and whether it may continue an existing run.

    Attributes:
        log_root: The shared TensorBoard root (a folder, gs://..., s3://...); empty in the
            pipeline's parameters until a local run resolves it (``./tbpipe-runs/logs``);
            a step needs one.
        experiment: The experiment folder.
        run_name: The run's name; empty: the KFP job's name (``naming.resolve_run``).
        resume: Continue the run of this name (interrupted or finished) instead of refusing
            it: every step takes the run's claim over (``run_claim``).
        job_name: The KFP job a step runs in (KFP's placeholder in a component); empty in
            the CLI.

    """

    log_root: str = ""
    experiment: str = DEFAULT_EXPERIMENT
    run_name: str = ""
    resume: bool = False
    job_name: str = ""

    def __post_init__(self) -> None:
        """InputError (one line) for an experiment or run name that cannot be a folder."""
        validate_name("experiment", self.experiment)
        if self.run_name:
            validate_name("run", self.run_name)

    def run(self, output_uri: str = "") -> str:
        """The run's name: ``run_name``, else the KFP job's (from ``output_uri`` at worst)."""
        return resolve_run(self.run_name, self.job_name, output_uri)

    def check_log_root(self) -> str:
        """The log root; InputError (one line) when there is none (a step needs one)."""
        if not self.log_root:
            raise InputError("log_root is empty: pass the log root every step shares, a "
                             "folder or a store URI such as gs://BUCKET/PATH, s3://BUCKET/PATH or "
                             "az://CONTAINER/PATH")
        return self.log_root

    def log_dir(self, run: str, step: str, trial: str = "") -> str:
        """``{log_root}/{experiment}/{run}/{step}`` (``.../{run}/{trial}/{step}`` in a sweep)."""
        return step_log_dir(self.check_log_root(), self.experiment, run, step, trial)


PARAMS = ParamGroup("run place", (
    Param("log_root", "where every step's TensorBoard logs go; run: default "
                      "./tbpipe-runs/logs, made absolute when the run starts; submit: "
                      "required, e.g. gs://BUCKET/logs, s3://BUCKET/logs or az://CONTAINER/logs"),
    Param("experiment", "the experiment folder under the log root"),
    Param("run_name", "the run's folder under the experiment; default: "
                      "run-YYYYmmdd-HHMMSS"),
    Param("resume", "continue the run of this --run-name (interrupted or finished) from its "
                    "checkpoints instead of refusing an existing run"),
), config=RunPlace)


@dataclasses.dataclass(frozen=True)
class StepRun:
    """A running step's place: its run, log dir and the claim it makes.

    Attributes:
        place: The run place the step was given.
        step: The step's name (``train``, ``evaluate-finetuned``).
        run: The run's name.
        log_dir: ``{log_root}/{experiment}/{run}/[{trial}/]{step}``.
        owner: The KFP job the step claims the run for.
        trial: A sweep's trial (``trial-NN``), else empty.

    """

    place: RunPlace
    step: str
    run: str
    log_dir: str
    owner: str
    trial: str = ""
    _claims: list = dataclasses.field(default_factory=list, repr=False, compare=False)

    @property
    def label(self) -> str:
        """``{experiment}/{run}``: what TensorBoard links filter on."""
        return f"{self.place.experiment}/{self.run}"

    def checkpoint_dir(self, checkpoint_root: str) -> str:
        """``{checkpoint_root}/{experiment}/{run}/checkpoints/[{trial}/]{step}``.

        The default root is beside the log root (``naming.checkpoint_root_for``).
        """
        return checkpoint_dir_for(self.place.log_root, checkpoint_root, self.place.experiment,
                                  self.run, self.step, self.trial)

    def claim(self) -> None:
        """Claim the run for this step's job before anything is written (``run_claim``)."""
        from tbpipe.components.common.run_claim import claim_run

        claim_run(self.place.log_root, self.place.experiment, self.run, self.owner,
                  self.place.resume)
        self._claims.append(self.owner)

    @property
    def claimed(self) -> bool:
        """Whether the step holds its run: only then does it write into the run's folder."""
        return bool(self._claims)


@contextlib.contextmanager
def step_run(step: str, output_uri: str, log_root: str, experiment: str, run_name: str,
             job_name: str, resume: bool = False, trial: str = "") -> Iterator[StepRun]:
    """The step preamble: its place and run resolved, every error one line and exit 1.

    Inside the block a TbpipeError becomes the step's one error line and a non-zero exit
    (``errors.exit_on_error``); the step claims its run (:meth:`StepRun.claim`) once its
    settings are checked, before it writes anything. A claimed step's error line is also
    kept in the run's folder (``run_summary.record_step_error``) for the run's outcome report.

    Args:
        step: The step's name, for its log dir and its error line.
        output_uri: One of the step's output artifacts' URIs (names the job as a fallback).
        log_root: The component's ``log_root``.
        experiment: The component's ``experiment``.
        run_name: The component's ``run_name``.
        job_name: The component's ``job_name`` (KFP's placeholder).
        resume: The component's ``resume``.
        trial: A sweep's trial (``trial-NN``): logs go one level down.

    """
    from tbpipe.components.common.run_claim import run_owner

    with exit_on_error(step):
        place = RunPlace(log_root, experiment, run_name, resume, job_name)
        place.check_log_root()
        run = place.run(output_uri)
        here = StepRun(place, step, run, place.log_dir(run, step, trial),
                       run_owner(job_name, output_uri), trial)
        try:
            yield here
        except Exception as exc:
            if here.claimed:  # what the run's outcome report names (notify, on a cluster)
                from tbpipe.components.common.errors import error_line
                from tbpipe.components.common.run_summary import record_step_error

                record_step_error(place.log_root, place.experiment, run, step,
                                  error_line(exc), trial)
            raise
