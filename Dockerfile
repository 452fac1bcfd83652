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
# Cache mounts keep the crates and the build outputs between builds (a
# change rebuilds only what it touches); the binary is copied out because
# a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vesper-cli \
 && install -m 0755 target/release/vesper /usr/local/bin/vesper

# ---------------------------------------------------------------- dbt
# Runs as root: it writes results into a directory bind-mounted from the
# host (./results), which the daemon creates root-owned when it is missing.
FROM python:3.11-slim-${DEBIAN} AS dbt
RUN pip install --no-cache-dir uv==0.13.9 \
 && install -d /app/dbt /app/results
WORKDIR /app/dbt
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DO_NOT_TRACK=1 \
    DBT_PROFILES_DIR=/app/dbt \
    VESPER_DUCKDB_PATH=/app/results/dbt.duckdb \
    VESPER_DUCKDB_EXTENSION_DIR=/app/dbt/.venv/duckdb_extensions
COPY dbt/ /app/dbt/
# The pinned environment of uv.lock, and DuckDB's httpfs laid out from its
# PyPI wheel where VESPER_DUCKDB_EXTENSION_DIR says (the build fails if
# analytics.py put it anywhere else).
RUN python3 analytics.py --setup-only --target s3 \
      | grep -qx "VESPER_DUCKDB_EXTENSION_DIR=${VESPER_DUCKDB_EXTENSION_DIR}"
# From here on, `uv run` uses that environment as it is: no lock check, no
# sync, no network. So `docker compose exec dbt_pipeline uv run dbt run`
# works offline.
ENV UV_FROZEN=1 \
    UV_NO_SYNC=1 \
    UV_OFFLINE=1
# Kept running for `docker compose exec dbt_pipeline uv run dbt run`.
CMD ["sleep", "infinity"]

# ---------------------------------------------------------------- runtime
# Last, so that a plain `docker build .` builds the services' image.
FROM debian:${DEBIAN}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/vesper --create-home vesper \
 && install -d -o vesper -g vesper /var/lib/vesper/wal /var/lib/vesper/lake
COPY --from=build /usr/local/bin/vesper /usr/local/bin/vesper
# Numeric, so a runtime can tell it is not root without /etc/passwd.
USER 10001:10001
# The defaults ./wal and ./lake resolve here, in directories the vesper
# user owns; a named volume mounted on one starts with that ownership.
WORKDIR /var/lib/vesper
ENTRYPOINT ["vesper"]
CMD ["--help"]
