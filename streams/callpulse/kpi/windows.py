"""The rolling windows every queue keeps: their names and lengths (the `window` label's values).

Apart from the model (model.py) so that the staffing estimates (staffing.py) can read the window
lengths without importing the model, which imports them.
"""

WINDOWS: tuple[tuple[str, int], ...] = (("5m", 300), ("15m", 900), ("30m", 1800), ("1h", 3600))
WINDOW_NAMES = tuple(name for name, _ in WINDOWS) + ("today",)
