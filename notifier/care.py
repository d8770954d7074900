"""(being written)"""

from __future__ import annotations

from notifier.routing import Route
from notifier.scheduler import Sweep

ROUTES: dict[str, Route] = {}
SWEEPS: list[Sweep] = []
