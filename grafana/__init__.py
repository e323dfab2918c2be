"""callpulse Grafana dashboards as code.

- ``common.py``     house style on top of grafana-foundation-sdk: variables, queries, panel factories
- ``dashboards.py`` the four dashboards, one function per panel
- ``lint.py``       stdlib-only helpers on the generated JSON: ``panel_queries``, ``render_query``,
                    ``metric_names`` (used by tests/test_grafana.py and the end-to-end tests)
- ``generate.py``   ``python -m grafana.generate`` writes ``grafana/dashboards/*.json``
"""
