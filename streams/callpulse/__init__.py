"""callpulse: live call-center queue KPIs from Kafka telephony events, exported to Prometheus."""

__version__ = "0.1.0"
