# callpulse worker image.
#
#   docker build -t callpulse .
#   docker run --rm -e CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 -p 6066:6066 callpulse
#   docker run --rm callpulse topics create          # any other subcommand: `callpulse --help`
#
# Configuration comes from CALLPULSE_* environment variables and/or a TOML file mounted into the
# container and named by CALLPULSE_CONFIG (see deploy/callpulse.example.toml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs (the rest of the repository stays out of the image).
# streams/callpulse/schemas is a symbolic link to schemas/, so both are copied: the event schema
# must end up inside the package. Every dependency is pinned in pyproject.toml and ships as a
# binary wheel: no compiler needed.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
RUN pip install . && rm -rf /src

# Run as an unprivileged user; its home holds the worker's local files (CALLPULSE_DATA_DIR).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/callpulse callpulse
USER 10001:10001
WORKDIR /var/lib/callpulse
ENV CALLPULSE_DATA_DIR=/var/lib/callpulse/data \
    CALLPULSE_WEB_HOST=0.0.0.0 \
    CALLPULSE_WEB_PORT=6066

# /metrics, /api/queues and /healthz
EXPOSE 6066

# /healthz answers "ok" once the worker's web server is up (python:slim has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CALLPULSE_WEB_PORT', '6066'), timeout=2)"]

ENTRYPOINT ["callpulse"]
CMD ["worker"]
