"""The plots: PNG pictures of a results file (matplotlib, the ``plot`` extra).

Each plot module function takes the results (as ``python -m benchmarks --json`` writes them)
and returns the paths it drew; `draw` runs them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], folder: Path) -> list[Path]:
    """Draw every plot the results have data for into ``folder``; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    return []
