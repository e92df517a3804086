"""What every benchmark's command line shares: flags, the report, its tables, fresh processes.

A benchmark module declares its ``FLAGS`` (see :func:`add_flags`) and ``run(args) -> Report``,
and ends with::

    if __name__ == "__main__":
        raise SystemExit(main_for("bench_x", __doc__, FLAGS, run))

:func:`main_for` parses the flags (and ``--json``), runs, prints the report as Markdown (with
the machine it ran on) and writes it as JSON when asked. Work that must run in a fresh
interpreter goes through :func:`in_fresh_process` and comes back through ``main_for``'s
hidden ``--child`` flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from benchmarks.common import median_ratio_interval, ratio

Flag = tuple[object, str | None]
"""A flag's default (its type, or ``store_true`` for ``False``) and its help (None: none)."""


@dataclasses.dataclass
class Report:
    """One benchmark's result: a table, notes, and the headline figures."""

    name: str
    title: str
    header: list[str]
    rows: list[list[object]]
    notes: list[str] = dataclasses.field(default_factory=list)
    headline: dict[str, object] = dataclasses.field(default_factory=dict)
    extra_tables: list[dict] = dataclasses.field(default_factory=list)
    summary: list[str] = dataclasses.field(default_factory=list)
    machine: dict[str, object] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def add_table(self, title: str, header: list[str], rows: list[list[object]]) -> None:
        """Add a secondary table (printed after the main one)."""
        self.extra_tables.append({"title": title, "header": header, "rows": rows})

    def markdown(self) -> str:
        """The report as Markdown: title, tables, notes."""
        from tbpipe.components.common.tensorboard.writer import markdown_table

        parts = [f"### {self.title}"]
        if self.rows:
            parts.append(markdown_table(self.header, self.rows))
        for table in self.extra_tables:
            parts += [f"**{table['title']}**", markdown_table(table["header"], table["rows"])]
        parts += [f"- {note}" for note in self.notes]
        parts.append(f"_{self.seconds:.0f} s; load average {load_average()}_")
        return "\n\n".join(parts)


def machine_info() -> dict[str, object]:
    """CPU model, cores, vector extensions, memory, versions, load: where figures came from."""
    info: dict[str, object] = {"python": platform.python_version(),
                               "cores": len(os.sched_getaffinity(0))}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                     if line.startswith("model name"))
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags"))
        info["cpu"] = model
        info["simd"] = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile")
                                 if f" {f}" in flags)
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                          .splitlines() if line.startswith("MemTotal")))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info["cpu"] = platform.processor() or "unknown"
    for package in ("tensorflow", "keras", "tensorboard", "tensorboardX", "kfp", "pandas",
                    "pyarrow"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    info["load_average"] = load_average()
    return info


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on a shared machine shows here)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def change(value: float, base: float) -> str:
    """How much more ``value`` is than ``base``, as a signed percentage (``+1.2%``)."""
    return f"{ratio(value, base) - 1:+.1%}"


def change_interval(values: Sequence[float], base: Sequence[float]) -> str:
    """The 90% bootstrap interval of ``median(values) / median(base) - 1``, as percentages."""
    low, high = median_ratio_interval(values, base)
    return f"{low - 1:+.1%} .. {high - 1:+.1%}"


def add_flags(parser: argparse.ArgumentParser, flags: Mapping[str, Flag]) -> None:
    """Add ``{"--name": (default, help)}`` flags; the type follows the default.

    Args:
        parser: The benchmark's parser.
        flags: ``False`` makes a ``store_true`` switch; ``None`` a string that defaults to
            None; any other default its own type (``int``, ``float``, ``str``).
    """
    for name, (default, help_text) in flags.items():
        if default is False:
            parser.add_argument(name, action="store_true", help=help_text)
        else:
            kind = str if default is None else type(default)
            parser.add_argument(name, type=kind, default=default, help=help_text)


def quiet_env(**extra: str) -> dict[str, str]:
    """This process's environment with TensorFlow's C++ logging quiet, plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def in_fresh_process(module: str, arguments: Sequence[str], **env: str) -> object:
    """Run ``python -m benchmarks.<module> ARGUMENTS`` and parse its last line as JSON.

    Args:
        module: The module under ``benchmarks`` (its ``main_for`` answers ``--child``).
        arguments: Its command-line arguments.
        **env: Extra environment variables (e.g. settings TensorFlow reads at start-up).

    Returns:
        What the child printed last (its other output is dropped).
    """
    reply = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *arguments],
                           capture_output=True, text=True, check=True, env=quiet_env(**env))
    return json.loads(reply.stdout.strip().splitlines()[-1])


def main_for(name: str, doc: str, flags: Mapping[str, Flag],
             run: Callable[[argparse.Namespace], Report],
             child: Callable[[argparse.Namespace], object] | None = None,
             argv: Sequence[str] | None = None,
             summary: Callable[[dict], list[str]] | None = None) -> int:
    """The command line of one benchmark: parse, run, print Markdown, optionally write JSON.

    Args:
        name: The module's name under ``benchmarks`` (the program name in ``--help``).
        doc: The module's docstring; its first line describes the command.
        flags: The benchmark's flags (see :func:`add_flags`); ``--json`` is added.
        run: Measures and returns the report.
        child: With ``--child VALUE`` (hidden), called instead of ``run``; what it returns is
            printed as one JSON line, for :func:`in_fresh_process`.
        argv: The arguments (default: the command line).
        summary: Makes the benchmark's line of ``python -m benchmarks``' summary
            (``[benchmark, figure, goal]``) from the report's headline figures.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}",
                                     description=doc.splitlines()[0])
    add_flags(parser, flags)
    parser.add_argument("--json", help="also write the report as JSON to this file")
    if child is not None:
        parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if child is not None and args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    started = time.perf_counter()
    report = run(args)
    report.seconds = time.perf_counter() - started
    if summary is not None:
        report.summary = summary(report.headline)
    report.machine = machine_info()
    print(report.markdown(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(report), indent=2,
                                              default=str))
    return 0
