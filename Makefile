# Two commands matter: `make run` starts the simulator, `make test` runs the tests.
# Both create .venv with what is missing first.

VENV := .venv
BIN := $(VENV)/bin
# The first interpreter that is Python 3.12 or newer (mitmproxy 12 needs it).
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: install run web test test-mitmdump coverage lint typecheck docs fuzz hostile bench bench-latency bench-streams bench-limits bench-replay bench-shared bench-batch bench-realtime bench-soak node-sdk image image-test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is needed (mitmproxy 12 requires it); none was found on PATH." >&2; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON), then installing what the simulator and its tests need"
	@echo "(requirements.txt, requirements-test.txt): about a minute the first time, less after that."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -r requirements.txt -r requirements-test.txt
	@touch $@
	@echo "Installed in $(VENV). make run starts the simulator; make test runs the tests."

# WORKERS=N: N simulator processes behind HAProxy on the same port, one quota through Redis.
WORKERS ?=
# ARGS: mitmproxy options for the simulator, e.g. ARGS="--set confdir=certs -p 9000" (with
# WORKERS, each worker gets them; the listen address is HAProxy's).
ARGS ?=

# The simulator on its lean launcher (only the mitmproxy addons it needs); `make web`, or
# `.venv/bin/mitmdump -s addons/simulator.py`, runs the same stages with all of mitmproxy's.
run: install
ifeq ($(strip $(WORKERS)),)
	$(BIN)/python addons/simulator.py $(ARGS)
else
	$(BIN)/python scripts/workers.py --workers $(WORKERS) -- $(ARGS)
endif

web: install
	$(BIN)/mitmweb -s addons/simulator.py $(ARGS)

# Test files are shared out between pytest-xdist workers, a file's tests in one worker (they
# share its simulator), in the order tests/conftest.py gives them; tests marked `serial` run
# alone. One worker more than the cores: most tests wait on a simulator process.
# TEST_WORKERS=N to choose.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The tests' simulators start on the lean launcher; SIMULATOR_TEST_LAUNCHER=mitmdump starts them
# as `mitmdump -s addons/simulator.py`, the compatible path, instead. This runs a representative
# set that way (about a minute: start-up, SDK, streams, HTTPS and HTTP/2, record and replay,
# realtime WebSockets, extensions); MITMDUMP_TESTS=tests for the whole suite.
MITMDUMP_TESTS ?= tests/e2e/test_smoke.py tests/e2e/test_e2e_openai.py tests/e2e/test_e2e_streaming.py \
	tests/e2e/test_e2e_http2.py tests/e2e/test_e2e_errors.py tests/e2e/test_e2e_record_replay.py \
	tests/e2e/test_e2e_realtime.py tests/e2e/test_e2e_extensions.py

test-mitmdump: install
	SIMULATOR_TEST_LAUNCHER=mitmdump $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(MITMDUMP_TESTS)

# The same with coverage of addons/aoai, the mitmdump processes the tests start included
# ([tool.coverage.run] patch = subprocess); the report in the terminal and htmlcov/.
coverage: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --cov --cov-report=term --cov-report=html

# What CI checks besides the tests: ruff's lint and format, the types, the generated
# configuration page up to date. `ruff format .` and `ruff check --fix .` repair most of it.
lint: install typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/options_reference.py --check

# mypy over addons/aoai with the settings in pyproject.toml (strict for openai/), as CI runs it.
typecheck: install
	$(BIN)/mypy

# The documentation as a site in site/, offline; --strict: a broken link or a warning fails.
# The configuration reference is written from the option declarations first.
docs: install
	$(BIN)/python scripts/options_reference.py
	$(BIN)/mkdocs build --strict --site-dir site

# Longer runs of the contract tests (Azure's OpenAPI files) and of hostile request bodies.
fuzz: install
	CONTRACT_EXAMPLES=300 CONTRACT_FILTERED=1 HOSTILE_REQUESTS_PER_BASE=20000 $(BIN)/python -m pytest -q tests/contract/test_contract.py \
		tests/unit/test_hostile_bodies.py

# Hostile clients against a real simulator: every case of memory, loop stalls, 500s and
# boundaries, measured (RSS, /++/health lag, statuses), then 1000 mutation-fuzzer rounds.
# HOSTILE_ARGS="--short" is the CI size; "--only memory", "--only fuzz --fuzz 5000", "--json out.json".
HOSTILE_ARGS ?=

hostile: install
	$(BIN)/python scripts/hostile.py $(HOSTILE_ARGS)

bench: install
	$(BIN)/python scripts/bench.py --workers $$(nproc)

# BENCH_LATENCY_ARGS="--workers 2": the same through HAProxy in front of two simulators.
BENCH_LATENCY_ARGS ?=

bench-latency: install
	$(BIN)/python scripts/bench_latency.py $(BENCH_LATENCY_ARGS)

# BENCH_STREAMS_ARGS="--streams 1000 --rounds 5": other burst sizes and more rounds.
BENCH_STREAMS_ARGS ?=

bench-streams: install
	$(BIN)/python scripts/bench_streams.py $(BENCH_STREAMS_ARGS)

bench-limits: install
	$(BIN)/python scripts/bench_limits.py

bench-replay: install
	$(BIN)/python scripts/bench_replay.py

# What sharing state through Redis adds to each request: one simulator in memory against one
# with SIMULATOR_REDIS_URL (a local redis-server). BENCH_SHARED_ARGS="--concurrency 8".
BENCH_SHARED_ARGS ?=

bench-shared: install
	$(BIN)/python scripts/bench_shared.py $(BENCH_SHARED_ARGS)

# Batch jobs of 10,000 and 50,000 chat lines with every wait at zero: wall time, lines per
# second, the simulator's peak memory and /++/health latency meanwhile. BENCH_BATCH_ARGS="--lines 1000".
BENCH_BATCH_ARGS ?=

bench-batch: install
	$(BIN)/python scripts/bench_batch.py $(BENCH_BATCH_ARGS)

# Concurrent realtime voice sessions with latency on: first audio against the deployment's time
# to first token, audio pacing against real time, events/s, CPU per session-second.
# BENCH_REALTIME_ARGS="--sessions 10 100".
BENCH_REALTIME_ARGS ?=

bench-realtime: install
	$(BIN)/python scripts/bench_realtime.py $(BENCH_REALTIME_ARGS)

# The openai Node SDK for the Realtime test with a Node client (tests/e2e/test_e2e_realtime_node.py).
node-sdk:
	mkdir -p .cache/node-openai
	cd .cache/node-openai && test -d node_modules/openai || \
		{ echo '{"name": "node-openai", "private": true}' > package.json && npm install --no-audit --no-fund openai@6 ws@8; }

# SOAK_ARGS="--minutes 5": shorter than the default 30 minutes.
SOAK_ARGS ?=

bench-soak: install
	$(BIN)/python scripts/bench_soak.py $(SOAK_ARGS)

# The container image: with docker where one answers (`docker info`), else buildah.
# IMAGE (the tag), NETWORK_TYPE (unrestricted, semi-restricted or restricted; restricted needs
# `.venv/bin/python scripts/setup_tiktoken.py` first), IMAGE_BASE (another base than the
# Dockerfile's python:3.12-slim, e.g. the one scripts/image_base.sh makes from Debian packages).
IMAGE ?= aoai-simulator
NETWORK_TYPE ?= unrestricted
IMAGE_BASE ?=
IMAGE_BUILD = $(shell docker info >/dev/null 2>&1 && echo docker build \
	|| { command -v buildah >/dev/null && echo buildah bud --isolation chroot --layers --format docker; })

image:
	@test -n "$(IMAGE_BUILD)" || { echo "make image needs docker (with a running engine) or buildah" >&2; exit 1; }
	$(IMAGE_BUILD) --build-arg network_type=$(NETWORK_TYPE) $(if $(IMAGE_BASE),--build-arg BASE=$(IMAGE_BASE)) -t $(IMAGE) .

# What a `docker run` user gets, checked on the built image (tests/image, not part of make test):
# builds each network_type variant (the base too where python:3.12-slim cannot be pulled: from
# Debian packages, which needs root, debootstrap and podman), runs it on loopback ports and
# talks to it with the openai SDK. Docker where one answers, else buildah and podman.
# IMAGE_TEST_ARGS: pytest's, e.g. "-k declares" builds the image and checks only its configuration.
IMAGE_TEST_ARGS ?=

image-test: install
	$(BIN)/python scripts/setup_tiktoken.py >/dev/null
	AOAI_IMAGE_TEST=1 $(BIN)/python -m pytest -p no:cacheprovider --durations=0 tests/image $(IMAGE_TEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache site

# The load-test driver against a running simulator (`make run`, or a deployed one); the report
# lands in bench-results/. More driver flags: LOADTEST_ARGS="--duration 60 --concurrency 16".
LOADTEST_URL ?= http://localhost:8000
LOADTEST_KEY ?=
LOADTEST_ARGS ?=

.PHONY: loadtest deploy-aca

loadtest: install
	$(BIN)/python loadtest/driver.py --url "$(LOADTEST_URL)" --key "$(LOADTEST_KEY)" $(LOADTEST_ARGS)

# Azure Container Apps with the settings from .env (needs the az CLI, logged in).
deploy-aca:
	bash deploy/aca/deploy.sh
