"""``python -m benchmarks``: run all five benchmarks and print their tables."""

from benchmarks.run_all import main

raise SystemExit(main())
