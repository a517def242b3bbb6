# The simulator in a container: mitmdump by default, mitmweb with `docker run ... web`.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TIKTOKEN_CACHE_DIR=/app/tiktoken_cache \
    RECORDING_DIR=/app/recordings

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \
    && useradd --create-home --uid 10001 simulator \
    && mkdir -p "$TIKTOKEN_CACHE_DIR" "$RECORDING_DIR" \
    && chown simulator "$TIKTOKEN_CACHE_DIR" "$RECORDING_DIR"

COPY addons/ addons/
# Fill the encoding cache at build time: the running container needs no network.
RUN python -c "import sys; sys.path.insert(0, 'addons'); from aoai.tokens import install_offline_encodings as i; i()"

USER simulator
VOLUME ["/app/recordings"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/++/health', timeout=2)"
CMD ["mitmdump", "-s", "addons/simulator.py"]
