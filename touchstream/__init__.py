"""touchstream: real-time customer-relationship analytics."""

import sys
from pathlib import Path

# `agents`, `schemas` and `sinks` are generic import names (openai-agents installs an
# `agents` too): make sure this repository's copies win, whoever imports us first.
_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_ROOT]:
    if _ROOT in sys.path:
        sys.path.remove(_ROOT)
    sys.path.insert(0, _ROOT)

__version__ = "0.1.0"
