"""``python -m workflow_scripts.generate``: the per-experiment generation stage."""

from workflow_scripts.generate.stage import main

raise SystemExit(main())
