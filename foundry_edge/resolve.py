"""Deprecated alias: this module moved to `foundry_edge.checkpoints.resolve` in 0.2 and the alias goes in 0.3."""

import warnings

from foundry_edge.checkpoints.resolve import *  # noqa: F401,F403  (the public names, as before)

warnings.warn("foundry_edge.resolve moved to foundry_edge.checkpoints.resolve; import it from there (this alias goes in 0.3)",
              DeprecationWarning, stacklevel=2)
