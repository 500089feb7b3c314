"""Deprecated alias: split in 0.2 into `foundry_edge.models.memory` (the memory budget) and
`foundry_edge.data.synthetic.synthetic_scene`; the alias goes in 0.3."""

import warnings

from foundry_edge.data.synthetic import synthetic_scene  # noqa: F401
from foundry_edge.models.memory import *  # noqa: F401,F403  (the public names, as before)

warnings.warn("foundry_edge.scenes moved to foundry_edge.models.memory (synthetic_scene: foundry_edge.data.synthetic); "
              "import them from there (this alias goes in 0.3)", DeprecationWarning, stacklevel=2)
