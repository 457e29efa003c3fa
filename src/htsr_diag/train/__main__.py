"""``python -m htsr_diag.train``: the ``htsr-diag train`` command."""

from .cli import main

raise SystemExit(main())
