"""Scorers: one interface (``score(samples, predictions) -> judgments``) for evaluation and rewards."""
