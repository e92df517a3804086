"""What a person sees of a local run: one line per step, a progress bar, the figure that matters.

kfp.local prints everything to ``sys.stdout``: its own log lines (``Executing task 'train'``,
each task's executor input as JSON; read by :func:`tbpipe.pipelines.kfp_compat.local_task_event`)
and, line by line, every step's output. :class:`RunDisplay`
stands in for ``sys.stdout`` during the run: all of it goes to the run's log file, and the
screen gets a line when a step starts and when it ends, with its duration and the figure the
step reported (:mod:`tbpipe.components.common.progress` marker lines), plus a live bar for
epochs and batches on a terminal (one line per epoch otherwise). ``verbose`` streams
everything to the screen as well, as kfp.local prints it.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Mapping
from typing import TextIO

from tbpipe.components.common.progress import parse
from tbpipe.components.registry import steps
from tbpipe.pipelines.kfp_compat import local_task_event, reads_local_log

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP_ERROR = re.compile(r"tbpipe: ([\w.-]+): error: (.+)")
#: How many of a failing step's last output lines the screen shows.
TAIL_LINES = 20
BAR_WIDTH = 24
#: The step-name column: the longest display name a step declares, and two spaces.
NAME_WIDTH = max(len(name) for step in steps() for name in step.display_names) + 2


def task_display_names(pipeline_spec: object) -> dict[str, str]:
    """KFP task names (``evaluate-2``) to their display names (``evaluate-finetuned``).

    Read from a compiled pipeline spec (``pipeline.pipeline_spec``), the root DAG and every
    sub-DAG (the ``dsl.If`` branches).
    """
    names: dict[str, str] = {}
    dags = [pipeline_spec.root.dag, *(c.dag for c in pipeline_spec.components.values())]
    for dag in dags:
        for task_name, task in dag.tasks.items():
            names.setdefault(task_name, task.task_info.name or task_name)
    return names


@dataclasses.dataclass
class _Step:
    name: str
    started: float
    figure: str = ""
    tail: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=TAIL_LINES))


class RunDisplay:
    """A text stream for ``sys.stdout`` (and ``sys.stderr``) while kfp.local runs a pipeline.

    Args:
        screen: Where the person looks (the real stdout, or stderr under ``--output json``).
        log: The run's log file; every byte written here goes to it.
        names: KFP task names to display names (:func:`task_display_names`).
        verbose: Also pass everything through to ``screen``, as kfp.local prints it.
        live: Draw a progress bar that rewrites itself (a terminal); else one line per epoch.

    """

    def __init__(self, screen: TextIO, log: TextIO, names: Mapping[str, str],
                 verbose: bool = False, live: bool = False) -> None:
        self.screen, self.log, self.names = screen, log, dict(names)
        self.verbose, self.live = verbose, live and not verbose
        self.errors: list[tuple[str, str]] = []  # (step, message) of each step error line
        self.step: _Step | None = None  # the step running now (kfp.local runs one at a time)
        self.last_finished = ""  # the step that finished last (kfp.local reads its outputs)
        self._partial = ""
        self._bar_shown = False
        #: Steps start and end at kfp.local's own log lines; else at their markers
        #: (:mod:`tbpipe.pipelines.kfp_compat`).
        self.reads_local_log = reads_local_log()

    # -- the text stream -------------------------------------------------------------------
    def write(self, text: str) -> int:
        """Log ``text``; act on each complete line."""
        self.log.write(text)
        if self.verbose:
            self.screen.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:  # noqa: D102
        self.log.flush()
        self.screen.flush()

    def isatty(self) -> bool:  # noqa: D102 - kfp.local and TensorFlow ask
        return False

    @property
    def encoding(self) -> str:  # noqa: D102
        return "utf-8"

    # -- what the lines mean ---------------------------------------------------------------
    def _line(self, line: str) -> None:
        if task := local_task_event(line):
            (self._start if task[0] == "started" else self._finish)(task[1])
            return
        event = parse(line)
        if event is not None:
            if self.step is None and not self.reads_local_log:  # kfp's wording unknown:
                self._start(str(event["step"]))  # the step's first marker starts it
            self._event(event)
            if event["event"] == "result" and not self.reads_local_log:
                self._finish(str(event["step"]))  # and its result ends it
            return
        if error := _STEP_ERROR.search(line):
            self.errors.append((error[1], error[2]))
        if self.step is not None and line.strip():
            self.step.tail.append(line.strip())

    def _show(self, text: str) -> None:
        """Print one line of the display (over the live bar, if one is drawn)."""
        if self.verbose:
            return
        if self._bar_shown:
            self.screen.write("\r\x1b[K")
            self._bar_shown = False
        self.screen.write(text + "\n")
        self.screen.flush()

    def _bar(self, text: str) -> None:
        self.screen.write("\r\x1b[K" + text)
        self.screen.flush()
        self._bar_shown = True

    def _start(self, task: str) -> None:
        self.step = _Step(self.names.get(task, task), time.monotonic())
        if self.live:
            self._bar(f"  {self.step.name:<{NAME_WIDTH}} running")
        else:
            self._show(f"  {self.step.name:<{NAME_WIDTH}} started")

    def _finish(self, task: str) -> None:
        step = self.step or _Step(self.names.get(task, task), time.monotonic())
        seconds = time.monotonic() - step.started
        figure = f"  {step.figure}" if step.figure else ""
        self._show(f"✓ {step.name:<{NAME_WIDTH}} {seconds:6.1f}s{figure}")
        self.step = None
        self.last_finished = step.name

    def _event(self, event: dict) -> None:
        step = self.step
        if step is None:
            return
        kind = event["event"]
        if kind == "label":  # the step names itself more precisely (a sweep's trial)
            step.name = str(event.get("label", step.name))
        elif kind == "result":
            step.figure = str(event.get("figure", ""))
        elif kind == "epoch":
            metrics = "  ".join(f"{k} {event[k]:.4f}" for k in
                                ("loss", "accuracy", "val_loss", "val_accuracy") if k in event)
            line = (f"  {step.name:<{NAME_WIDTH}} epoch {event['epoch']}/{event['epochs']}  "
                    f"{metrics}")
            if self.live:
                self._bar(line.rstrip())
            else:
                self._show(line.rstrip())
        elif kind == "batch" and self.live:
            done = event["batch"] / max(event["batches"], 1)
            filled = int(round(done * BAR_WIDTH))
            self._bar(f"  {step.name:<{NAME_WIDTH}} epoch {event['epoch']}/{event['epochs']} "
                      f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                      f"{event['batch']}/{event['batches']}")

    def failed(self, log_path: str) -> None:
        """Show the failing step, its last output lines and where the whole log is."""
        self.flush_partial()
        if self.verbose:
            self.screen.write(f"\nfull log: {log_path}\n")
            return
        step = self.step
        if step is None:
            self._show(f"✗ the pipeline failed (full log: {log_path})")
            return
        seconds = time.monotonic() - step.started
        self._show(f"✗ {step.name:<{NAME_WIDTH}} {seconds:6.1f}s  failed; its last lines:")
        for line in step.tail:
            self._show(f"    {line}")
        self._show(f"  full log: {log_path}")

    def flush_partial(self) -> None:
        """Treat an unfinished last line as complete (the run is over)."""
        if self._partial:
            self.write("\n")
