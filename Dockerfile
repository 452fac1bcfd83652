# syntax=docker/dockerfile:1
#
# One image for every vesper service (target `runtime`, the default), and
# the analytics image for the dbt_pipeline container (target `dbt`). No
# stage names a platform: both build natively on linux/amd64 and
# linux/arm64 (Apple silicon included), without emulation.
#
#   docker build -t vesper .             # the services
#   docker build --target dbt -t vesper-dbt .
#   docker build --build-arg VESPER_BUILD_JOBS=2 -t vesper .   # less memory

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN} AS build
# How many compilations run at once; empty: one per CPU the builder has.
# In release mode aws-sdk-s3 alone peaks at about 1.8 GB and every other
# compilation stays under 1 GB, so a builder with little memory (a small
# Docker Desktop VM) wants a low number: `--build-arg VESPER_BUILD_JOBS=2`
# (about 3 GiB), or VESPER_BUILD_JOBS in .env for `docker compose build`.
ARG VESPER_BUILD_JOBS=
WORKDIR /src
COPY . .
# Cache mounts keep the crates and the build outputs between builds (a
# change rebuilds only what it touches); the binary is copied out because
# a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vesper-cli ${VESPER_BUILD_JOBS:+--jobs "$VESPER_BUILD_JOBS"} \
 && install -m 0755 target/release/vesper /usr/local/bin/vesper

# ---------------------------------------------------------------- dbt
# Runs as whoever compose says (the host user, so that the results it writes
# into the bind-mounted ./results are the user's), else as 10001. Nothing it
# writes at run time goes into the image's own directories: dbt's target and
# logs, uv's cache and HOME are under /tmp.
FROM python:3.11-slim-${DEBIAN} AS dbt
RUN pip install --no-cache-dir uv==0.13.9 \
 && groupadd --system --gid 10001 analytics \
 && useradd --system --uid 10001 --gid 10001 --no-log-init --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin analytics \
 && install -d /app/dbt /app/results
WORKDIR /app/dbt
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DO_NOT_TRACK=1 \
    DBT_PROFILES_DIR=/app/dbt \
    VESPER_DUCKDB_PATH=/app/results/dbt.duckdb \
    VESPER_DUCKDB_EXTENSION_DIR=/app/dbt/.venv/duckdb_extensions
# The environment first, from the lock files alone, so that editing a model
# does not reinstall it: the pinned environment of uv.lock, and DuckDB's
# httpfs laid out from its PyPI wheel (linux amd64 and arm64) where
# VESPER_DUCKDB_EXTENSION_DIR says (the build fails if analytics.py put it
# anywhere else). uv's download cache is a cache mount, not a layer.
COPY dbt/pyproject.toml dbt/uv.lock dbt/analytics.py /app/dbt/
RUN --mount=type=cache,target=/root/.cache/uv \
    UV_CACHE_DIR=/root/.cache/uv python3 analytics.py --setup-only --target s3 \
      | grep -qx "VESPER_DUCKDB_EXTENSION_DIR=${VESPER_DUCKDB_EXTENSION_DIR}"
COPY dbt/ /app/dbt/
# From here on, `uv run` uses that environment as it is: no lock check, no
# sync, no network. So `docker compose exec dbt_pipeline uv run dbt run`
# works offline, as any user.
ENV UV_FROZEN=1 \
    UV_NO_SYNC=1 \
    UV_OFFLINE=1 \
    UV_CACHE_DIR=/tmp/uv-cache \
    DBT_TARGET_PATH=/tmp/dbt/target \
    DBT_LOG_PATH=/tmp/dbt/logs \
    HOME=/tmp
USER 10001:10001
# Kept running for `docker compose exec dbt_pipeline uv run dbt run`.
CMD ["sleep", "infinity"]

# ---------------------------------------------------------------- runtime
# Last, so that a plain `docker build .` builds the services' image.
FROM debian:${DEBIAN}-slim AS runtime
# The group is created with its id: `useradd --user-group` would give it a
# system gid, and USER 10001:10001 would run with a gid that has no entry.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 vesper \
 && useradd --system --uid 10001 --gid 10001 --no-log-init \
      --home-dir /var/lib/vesper --create-home --shell /usr/sbin/nologin vesper \
 && install -d -o 10001 -g 10001 /var/lib/vesper/wal /var/lib/vesper/lake
COPY --from=build /usr/local/bin/vesper /usr/local/bin/vesper
# Numeric, so a runtime can tell it is not root without /etc/passwd.
USER 10001:10001
# The defaults ./wal and ./lake resolve here, in directories the vesper
# user owns; a named volume mounted on one starts with that ownership.
WORKDIR /var/lib/vesper
ENTRYPOINT ["vesper"]
CMD ["--help"]
