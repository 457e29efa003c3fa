"""pytest collects the docstring examples of src/htsr_diag (``--doctest-modules``): the framework
hooks import their framework on import, so where an optional extra is not installed their modules
are left out of the collection instead of failing it (tests/test_integrations.py skips likewise)."""

from __future__ import annotations

import importlib.util

_NEEDS = {
    "htsr_diag/integrations/lightning.py": ("lightning", "pytorch_lightning"),
    "htsr_diag/integrations/transformers.py": ("transformers",),
    "htsr_diag/integrations/tensorboard.py": ("tensorboard",),
}

collect_ignore = [path for path, modules in _NEEDS.items()
                  if all(importlib.util.find_spec(m) is None for m in modules)]
