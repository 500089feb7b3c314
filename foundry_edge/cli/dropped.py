"""`--drop-invalid` (foundry_edge.cli.options.DROP_INVALID): the one line that says how much it dropped instead
of a warning per cloud (foundry_edge.data.DroppedPoints)."""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Callable

@contextlib.contextmanager
def note_dropped(echo: Callable[[str], None]):
    """Collect the DroppedPoints warnings of the block and, when it ends, echo one line: how many points
    from how many clouds. Other warnings are issued again as they came."""
    from foundry_edge.data import DroppedPoints

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DroppedPoints)
        yield
    drops = [w for w in caught if issubclass(w.category, DroppedPoints)]
    for w in caught:
        if not issubclass(w.category, DroppedPoints):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if drops:
        counts = (re.search(r"dropped (\d+) points", str(w.message)) for w in drops)
        points = sum(int(found.group(1)) for found in counts if found)
        echo(f"--drop-invalid: dropped {points} points with NaN/Inf from {len(drops)} "
             f"cloud{'s' if len(drops) > 1 else ''} (first: {drops[0].message})")
