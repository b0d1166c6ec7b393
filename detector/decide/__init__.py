"""Decisions on scores: per-label smoothing and hysteresis, then onset/update/offset events.
Pure numpy; never imports a runtime."""
