"""``python -m benchmarks``: run the livestream benchmarks (see benchmarks/run.py)."""

from benchmarks.run import main

raise SystemExit(main())
