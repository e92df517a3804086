"""Print the project's requirements from pyproject.toml, plus those of the extras named.

Used by docker/Dockerfile (``run``, ``gpu``) and docker/tensorboard.Dockerfile
(``tensorboard``) to install the dependencies in a layer of their own (pinned by
docker/constraints.txt), so a code change does not reinstall them. An extra that names the
project's own extras (``run`` includes ``tbpipe[tensorboard]``) prints theirs in its place:

    python3 requirements.py [EXTRA ...] > requirements.txt
"""

import re
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
extras = project.get("optional-dependencies", {})
SELF = re.compile(rf"^{re.escape(project['name'])}\[([^\]]+)\]$")


def requirements(extra: str, seen: set[str]) -> list[str]:
    """The requirements of ``extra``, the project's own extras in it expanded (each once)."""
    if extra in seen:
        return []
    seen.add(extra)
    lines = []
    for line in extras[extra]:
        own = SELF.match(line.strip())
        if own:
            for name in own.group(1).split(","):
                lines += requirements(name.strip(), seen)
        else:
            lines.append(line)
    return lines


seen: set[str] = set()
print(*project["dependencies"], *(r for e in sys.argv[1:] for r in requirements(e, seen)),
      sep="\n")
