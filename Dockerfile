# syntax=docker/dockerfile:1
#
# One image for every vesper service (target `runtime`, the default), and
# the analytics image for the dbt_pipeline container (target `dbt`).
#
#   docker build -t vesper .             # the services
#   docker build --target dbt -t vesper-dbt .

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build outputs between builds; the
# binary is copied out because the target dir is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vesper-cli \
 && install -m 0755 target/release/vesper /usr/local/bin/vesper

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/vesper --create-home vesper \
 && install -d -o vesper -g vesper /var/lib/vesper/wal /var/lib/vesper/lake
COPY --from=build /usr/local/bin/vesper /usr/local/bin/vesper
USER vesper
WORKDIR /var/lib/vesper
ENV VESPER_WAL_DIR=/var/lib/vesper/wal \
    VESPER_LAKE=/var/lib/vesper/lake
ENTRYPOINT ["vesper"]
CMD ["--help"]

# ---------------------------------------------------------------- dbt
# Runs as root: it writes results into a directory bind-mounted from the
# host (./results), which the daemon creates root-owned.
FROM python:3.11-slim-${DEBIAN} AS dbt
RUN pip install --no-cache-dir uv==0.13.9 \
 && install -d /app/dbt /app/results
WORKDIR /app/dbt
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DO_NOT_TRACK=1 \
    VESPER_DUCKDB_PATH=/app/results/dbt.duckdb \
    VESPER_DUCKDB_EXTENSION_DIR=/app/dbt/.venv/duckdb_extensions
COPY dbt/ /app/dbt/
# The pinned environment of uv.lock, and DuckDB's httpfs laid out from its
# PyPI wheel, so `uv run dbt run` never downloads anything.
RUN python3 analytics.py --setup-only --target s3
# Kept running for `docker compose exec dbt_pipeline uv run dbt run`.
CMD ["sleep", "infinity"]
