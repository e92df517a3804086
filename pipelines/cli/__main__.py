"""``python -m tbpipe.pipelines.cli``: the ``tbpipe`` command."""

import sys

from tbpipe.pipelines.cli.main import main

sys.exit(main())
