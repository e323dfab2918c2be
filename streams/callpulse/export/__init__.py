"""What the worker shows: the Prometheus collector and the pipeline's own counters (metrics.py).

Reads queue models (`kpi`) and event reject reasons (`events`); knows nothing of Faust or Kafka,
so a scrape cannot touch the stream. The pages themselves (/metrics, /api/queues, /healthz) are
served by the Faust app's web server (pipeline/app.py). May import `kpi`, `events`, `config` and
`sources`.
"""
