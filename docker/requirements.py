"""Print the project's requirements from pyproject.toml, plus those of the extras named.

Used by docker/Dockerfile to install the dependencies in a layer of their own (pinned by
docker/constraints.txt), so a code change does not reinstall TensorFlow:

    python3 requirements.py [EXTRA ...] > requirements.txt
"""

import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
extras = project.get("optional-dependencies", {})
print(*project["dependencies"], *(r for e in sys.argv[1:] for r in extras[e]), sep="\n")
