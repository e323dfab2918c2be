"""The arithmetic of a call center's numbers, with no Kafka, Faust or Prometheus in it.

The queue model (model.py: a deterministic fold over a queue's events, read against a clock), the
rolling windows (windows.py), the service-level formulas and ratios (formulas.py), interval
reports (intervals.py), business hours (hours.py), Erlang B/C/A (erlang.py), live staffing
(staffing.py) and forecast vs actual (forecast.py). May import only the standard library, orjson
and each other, so every number can be tested by hand without a broker; tests/test_layout.py
checks it.
"""
