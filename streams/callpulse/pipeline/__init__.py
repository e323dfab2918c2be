"""The stream: the Faust app and everything that moves events between Kafka topics.

In data-flow order: topics.py (names, partition plan, creation), publish.py (producers' side:
events onto the events topic), align.py (stage 1's event-time alignment of its input partitions),
app.py (the Faust app: stage 1 routing, stage 2 aggregation, recovery, timers and pages),
state.py (stage 2's durable per-queue state and its changelog records), progress.py (is each
stage making progress?). May import `kpi`, `events`, `config`, `sources` and `export`.
"""
