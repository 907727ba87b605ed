"""Shared test fixtures: tiny, deterministic, session-scoped where costly."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
