"""Deprecated alias: this module moved to `foundry_edge.checkpoints.format` in 0.2 and the alias goes in 0.3."""

import warnings

from foundry_edge.checkpoints.format import *  # noqa: F401,F403  (the public names, as before)

warnings.warn("foundry_edge.checkpoint moved to foundry_edge.checkpoints.format; import it from there (this alias goes in 0.3)",
              DeprecationWarning, stacklevel=2)
