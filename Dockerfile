# touchstream worker image: `touchstream worker` by default; any other subcommand works too,
# e.g. `docker run --rm IMAGE migrate` or `docker compose run --rm worker query "SELECT 1"`.
FROM python:3.11-slim

# agents, schemas and sinks are generic import names: the app directory must come first.
# The worker's table lives in RocksDB under the data dir, so a restart reads only the
# changelog written since (docs/operations.md, "State").
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    TOUCHSTREAM_DATA_DIR=/app/var \
    TOUCHSTREAM_STORE=rocksdict://

WORKDIR /app

# Every dependency ships a manylinux wheel for CPython 3.11, so no compiler is needed.
# The pinned production set first (no embedded ClickHouse, no local broker), then the
# project itself without resolving anything again.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY schemas ./schemas
COPY sinks ./sinks
COPY touchstream ./touchstream
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

RUN groupadd --system --gid 10001 touchstream \
    && useradd --system --uid 10001 --gid touchstream --home-dir /app --no-create-home touchstream \
    && mkdir -p /app/var \
    && chown touchstream:touchstream /app/var
USER touchstream

ENTRYPOINT ["touchstream"]
CMD ["worker"]
