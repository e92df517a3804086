"""Write tests/group_durations.json from a whole run's JUnit XML (the xdist groups' seconds).

    .venv/bin/python -m pytest ... --junitxml=run.xml   # scripts/test.sh, on a quiet machine
    .venv/bin/python -m tests.group_durations run.xml

tests/conftest.py hands the groups to the workers longest first with these figures. Setup
and teardown count: a module's fixtures (a whole pipeline run) are most of its time.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).with_name("group_durations.json")


def group_of(nodeid: str) -> str:
    """The group a test runs in: ``docker`` for every test under tests/docker/ (images are
    built one at a time), else its module (its module-scoped fixtures run once)."""
    path = nodeid.split("::")[0]
    return "docker" if path.startswith("tests/docker/") else path


def group_durations(junit_xml: str) -> dict[str, float]:
    """Seconds per group (module path, or ``docker`` for tests/docker/), largest first."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        # classname is the dotted module (plus a class); the file is its first parts
        parts = [p for p in module if not p[:1].isupper()]
        totals[group_of("/".join(parts) + ".py")] += float(case.get("time", 0))
    return dict(sorted(((g, round(t, 1)) for g, t in totals.items()), key=lambda kv: -kv[1]))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    OUT.write_text(json.dumps(group_durations(argv[0]), indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
