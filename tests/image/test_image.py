"""The container image as a `docker run` user gets it: built (`make image`, each network_type),
run with its own command and port 8000 published on a free loopback port, and talked to from
this machine with the openai SDK and httpx; then compose.yaml with two replicas. Run by `make image-test` only (AOAI_IMAGE_TEST=1):
it builds images, which takes a container engine and minutes.

Where python:3.12-slim cannot be pulled (no registry in reach), the base is a stand-in made
from Debian packages by scripts/image_base.sh (IMAGE_BASE names another)."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import API_VERSION, ROOT, free_port
from image_engine import FIGURES, HEALTH_PROBE, Container, Engine, EngineError

DEFAULT_BASE = "python:3.12-slim"
STAND_IN_BASE = "localhost/aoai-simulator-base:trixie"
TAG = "localhost/aoai-simulator-test"
KEY = "image-test-key"
CA = "/app/certs/mitmproxy-ca-cert.pem"
RUN = uuid.uuid4().hex[:6]  # in every container and volume name, so two runs never meet
MESSAGES = [{"role": "user", "content": "Hello from the image test!"}]


def name(what: str) -> str:
    return f"aoai-image-test-{what}-{RUN}"


# --- building ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine(tmp_path_factory) -> Engine:
    try:
        return Engine.find(tmp_path_factory.mktemp("engine"))
    except EngineError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def base(engine: Engine) -> str:
    """The base image for the build: IMAGE_BASE; else the Dockerfile's own where it can be
    pulled (""); else the stand-in from Debian packages."""
    if os.environ.get("IMAGE_BASE"):
        return os.environ["IMAGE_BASE"]
    if engine.name == "docker" or engine("pull", "--quiet", DEFAULT_BASE, timeout=600, check=False).returncode == 0:
        FIGURES["base"] = DEFAULT_BASE
        return ""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image_base.sh"), STAND_IN_BASE],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"scripts/image_base.sh failed:\n{done.stdout}{done.stderr}"
    made = "present" not in done.stdout
    FIGURES["base"] = (
        f"{STAND_IN_BASE} ({DEFAULT_BASE} cannot be pulled), "
        + (f"made in {time.monotonic() - started:.0f} s, " if made else "already made, ")
        + f"{engine.image_size_mb(STAND_IN_BASE):.0f} MB"
    )
    return STAND_IN_BASE


@pytest.fixture(scope="session")
def build(engine: Engine, base: str) -> Iterator:
    """build(network_type) -> the image's tag, built by `make image` (once per variant)."""
    built: dict[str, str] = {}

    def build_variant(network_type: str) -> str:
        if network_type not in built:
            tag = f"{TAG}:{network_type}"
            started = time.monotonic()
            done = subprocess.run(
                ["make", "-o", ".venv/.installed", "image", f"IMAGE={tag}", f"NETWORK_TYPE={network_type}"]
                + ([f"IMAGE_BASE={base}"] if base else []),
                cwd=ROOT,
                env=engine.env,
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            assert done.returncode == 0, f"make image ({network_type}) failed:\n{done.stdout[-6000:]}{done.stderr}"
            FIGURES[f"image {network_type}"] = (
                f"built in {time.monotonic() - started:.0f} s, {engine.image_size_mb(tag):.0f} MB"
            )
            built[network_type] = tag
        return built[network_type]

    yield build_variant
    if not os.environ.get("AOAI_IMAGE_KEEP"):  # the layers stay, as the next build's cache
        engine("rmi", *built.values(), check=False)


@pytest.fixture(scope="module")
def image(build) -> str:
    return build("unrestricted")


@pytest.fixture
def containers(engine: Engine) -> Iterator:
    """start(what, **options) -> a running container; all are removed after the test."""
    names: list[str] = []

    def start(what: str, port: int | None = -1, wait: bool = True, **options) -> Container:
        names.append(name(what))
        container = engine.start(options.pop("image"), names[-1], free_port() if port == -1 else port, **options)
        if wait:
            container.wait_ready()
        return container

    yield start
    engine.remove(*names)


@pytest.fixture
def volume(engine: Engine) -> Iterator[str]:
    """A named volume (as `-v simulator-certs:/app/certs`), removed after the test."""
    volume_name = name("certs")
    yield volume_name
    engine("volume", "rm", "--force", volume_name, check=False)


def sdk(url: str, **client_options) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=url, api_key=KEY, api_version=API_VERSION, max_retries=0, timeout=30, **client_options
    )


def test_the_image_declares_what_a_container_platform_reads(engine, image):
    """What Kubernetes, Container Apps and `docker run` read from the image before it runs: a
    user by number (runAsNonRoot), the port, the volumes and a health check."""
    config = engine.image_config(image)
    assert config.get("User") == "10001"
    assert "8000/tcp" in (config.get("ExposedPorts") or {})
    assert {"/app/recordings", "/app/certs", "/app/simulator-data"} <= set(config.get("Volumes") or {})
    assert engine.health_check(image).get("Test"), "no HEALTHCHECK"


# --- one simulator, as `docker run -p 8000:8000 -e SIMULATOR_API_KEY=… IMAGE` starts it --------


@pytest.fixture(scope="module")
def simulator(engine: Engine, image: str) -> Iterator[Container]:
    container = engine.start(image, name("one"), free_port(), env={"SIMULATOR_API_KEY": KEY})
    try:
        container.wait_ready()
        yield container
    finally:
        engine.remove(container.name)


def test_start_up_banner(simulator):
    # The address is the container's own; the user publishes it where they like.
    banner = "Azure OpenAI simulator: mode generate, listening on http://localhost:8000"
    logs = simulator.wait_log(banner)
    assert banner in logs, logs
    assert f"API key:     {KEY}" in logs, logs
    assert f"clients trust the CA file {CA}" in logs, logs
    assert "Traceback" not in logs and "Permission denied" not in logs, logs


def test_health(simulator):
    answer = httpx.get(f"{simulator.url}/++/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["status"] == "healthy"


def test_the_images_own_health_check_passes(engine, image, simulator):
    # The HEALTHCHECK the image declares (kept: the build writes docker's format), run as the
    # engine runs it.
    check = engine.health_check(image).get("Test", [])
    assert check[:1] == ["CMD"] and HEALTH_PROBE in check[-1], f"the image's HEALTHCHECK: {check}"
    done = simulator.exec(*check[1:])
    assert done.returncode == 0, done.stderr


def test_chat_with_the_openai_sdk(simulator):
    completion = sdk(simulator.url).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.prompt_tokens > 5


def test_stream_with_the_openai_sdk(simulator):
    stream = sdk(simulator.url).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20, stream=True)
    chunks = [chunk for chunk in stream if chunk.choices]
    assert len(chunks) > 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_wrong_key_is_refused(simulator):
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=simulator.url, api_key="wrong", api_version=API_VERSION, max_retries=0
        ).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)


def test_runs_as_a_non_root_user(engine, image, simulator):
    assert engine.image_config(image).get("User") == "10001"  # by number, for runAsNonRoot
    assert simulator.exec("id", "-u").stdout.strip() == "10001"


# SIGTERM is enough (no SIGKILL after the 30 s grace): it stops in about a second; the bound
# leaves room for a busy machine, well under the grace.
STOPPED_WITHIN_S = 8


def test_sigterm_stops_it_within_seconds(engine, image, containers):
    container = containers("stop", image=image, env={"SIMULATOR_API_KEY": KEY})
    seconds = container.stop(grace=30)
    state = container.state()
    assert seconds < STOPPED_WITHIN_S, f"stopped after {seconds:.1f} s"
    assert state["ExitCode"] != 137, "killed: SIGTERM was not enough"


# --- HTTPS with the CA from the certificate volume ----------------------------------------------


def https_client(ca_file: Path) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file)), timeout=30)


def copy_ca(engine: Engine, container: Container, to: Path) -> Path:
    engine("cp", f"{container.name}:{CA}", str(to))
    return to


def test_https_with_the_ca_from_the_volume_and_the_same_ca_after_a_restart(engine, image, containers, volume, tmp_path):
    options = {"image": image, "env": {"SIMULATOR_API_KEY": KEY}, "volumes": [f"{volume}:/app/certs"]}
    first = containers("https1", **options)
    ca = copy_ca(engine, first, tmp_path / "first-ca.pem")
    https = f"https://localhost:{first.port}"
    with https_client(ca) as client:
        assert client.get(f"{https}/++/health").status_code == 200
        completion = sdk(https, http_client=client).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=5
        )
        assert completion.choices[0].message.content
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # the CA is what makes it pass
        httpx.get(f"{https}/++/health", verify=ssl.create_default_context(), timeout=10)

    engine.remove(first.name)  # a new container, the same volume
    second = containers("https2", **options)
    assert copy_ca(engine, second, tmp_path / "second-ca.pem").read_bytes() == ca.read_bytes()
    with https_client(ca) as client:
        assert client.get(f"https://localhost:{second.port}/++/health").status_code == 200


# --- settings from the environment and from files ------------------------------------------------


def test_workers_inside_the_container(image, containers):
    container = containers("workers", image=image, env={"SIMULATOR_API_KEY": KEY, "WORKERS": "2"})
    banner = "2 workers behind HAProxy on http://localhost:8000"
    logs = container.wait_log(banner)  # printed once HAProxy answers
    assert banner in logs, logs
    client = sdk(container.url)
    for _ in range(4):
        assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5).choices
    # One scrape answers for every worker, each sample labelled with its worker.
    metrics = httpx.get(f"{container.url}/++/metrics", headers={"api-key": KEY}, timeout=30)
    assert metrics.status_code == 200, metrics.text
    workers = set(re.findall(r'worker="([^"]+)"', metrics.text))
    assert len(workers) == 2, workers

    seconds = container.stop(grace=30)  # SIGTERM reaches the launcher, which stops them all
    assert seconds < STOPPED_WITHIN_S, f"stopped after {seconds:.1f} s"
    assert container.state()["ExitCode"] == 0


def test_a_deployments_file_mounted_read_only(image, containers, tmp_path):
    deployments = tmp_path / "deployments.json"
    deployments.write_text(json.dumps({"image-test-chat": {"model": "gpt-4o-mini", "tokensPerMinute": 6000}}))
    deployments.chmod(0o644)
    container = containers(
        "deployments",
        image=image,
        env={"SIMULATOR_API_KEY": KEY, "OPENAI_DEPLOYMENT_CONFIG_PATH": "/config/deployments.json"},
        volumes=[f"{deployments}:/config/deployments.json:ro"],
    )
    logs = container.wait_log("image-test-chat (gpt-4o-mini)")
    assert "image-test-chat (gpt-4o-mini)" in logs, logs
    completion = sdk(container.url).chat.completions.create(model="image-test-chat", messages=MESSAGES, max_tokens=5)
    assert completion.model.startswith("gpt-4o-mini"), completion.model


def test_a_bad_setting_stops_the_container_with_one_line(image, containers):
    container = containers("bad", image=image, env={"SIMULATOR_API_KEY": KEY, "SIMULATOR_MODE": "sideways"}, wait=False)
    state = container.wait_exit(timeout=60)
    logs = container.logs()
    assert state["ExitCode"] != 0, logs
    naming = [line for line in logs.splitlines() if "SIMULATOR_MODE" in line]
    assert len(naming) == 1 and "sideways" in naming[0], logs
    assert "Traceback" not in logs, logs


# --- the network_type builds ------------------------------------------------------------------

# The names tiktoken gives the two encodings' files (sha1 of their download address).
ENCODING_FILES = {"9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "fb374d419588a4632f3f557e76b4b70aebbca790"}

CHAT_INSIDE = f"""
import json, urllib.request
request = urllib.request.Request(
    "http://127.0.0.1:8000/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
    data=json.dumps({{"messages": {MESSAGES!r}, "max_tokens": 5}}).encode(),
    headers={{"api-key": "{KEY}", "content-type": "application/json"}},
)
print(urllib.request.urlopen(request, timeout=30).read().decode())
"""


@pytest.mark.parametrize("network_type", ["unrestricted", "semi-restricted", "restricted"])
def test_each_network_type_answers_with_no_network_at_all(engine, build, containers, network_type):
    tag = build(network_type)
    if network_type != "unrestricted":  # placed while building (from ./tiktoken_cache, or made)
        listing = engine("run", "--rm", "--network", "none", tag, "ls", "/app/tiktoken_cache").stdout.split()
        assert set(listing) >= ENCODING_FILES, listing
    # No network in the container: the encodings cannot come from anywhere but the image.
    container = containers(
        network_type, image=tag, port=None, env={"SIMULATOR_API_KEY": KEY}, options=["--network", "none"]
    )
    done = container.exec("python", "-c", CHAT_INSIDE)
    assert done.returncode == 0, done.stderr + container.logs()
    answer = json.loads(done.stdout)
    assert answer["choices"][0]["message"]["content"] and answer["usage"]["prompt_tokens"] > 5, answer


# --- compose.yaml: two replicas, HAProxy and Redis ------------------------------------------------
# All from the image `make image` builds, which holds haproxy and redis-server and stands in
# for their own images (REDIS_IMAGE, HAPROXY_IMAGE); `docker compose` with Docker,
# podman-compose with podman, skipped where neither is installed.


def compose_command(engine: Engine) -> list[str] | None:
    if engine.name == "docker":
        found = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode == 0
        return ["docker", "compose"] if found else None
    return ["podman-compose"] if shutil.which("podman-compose") else None


@pytest.fixture(scope="module")
def balancer(engine: Engine, image: str) -> Iterator[str]:
    command = compose_command(engine)
    if command is None:
        pytest.skip(f"no compose for {engine.name} (docker compose, or podman-compose)")
    port = free_port()
    project = f"aoai-image-test-{RUN}"
    env = {
        **engine.env,
        "SIMULATOR_API_KEY": KEY,
        "SIMULATOR_IMAGE": image,
        "REDIS_IMAGE": image,
        "HAPROXY_IMAGE": image,
        "SIMULATOR_REPLICAS": "2",
        "BALANCER_PORT": f"127.0.0.1:{port}",
    }

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "--project-name", project, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def logs() -> str:
        done = compose("logs")
        return done.stdout + done.stderr

    try:
        started = compose("up", "-d")
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while not ready(url):
            assert time.monotonic() < deadline, f"the balancer did not answer in 90 s:\n{logs()}"
            time.sleep(0.5)
        yield url
    finally:
        # The project's containers with their anonymous volumes first (podman-compose's down
        # leaves those), by the label both compose tools give them.
        listed = engine(
            "ps", "--all", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}"
        )
        engine.remove(*listed.stdout.split())
        compose("down", "--volumes")
        # podman-compose leaves the project's network (docker compose removes it).
        engine("network", "rm", f"{project}_default", check=False)


def ready(url: str) -> bool:
    """Both replicas healthy behind the balancer, sharing state through Redis."""
    try:
        return len(replicas(url)) == 2
    except httpx.HTTPError:
        return False


def replicas(url: str, asks: int = 10) -> set[str]:
    seen = set()
    for _ in range(asks):  # a connection each: HAProxy hands new ones to the least busy replica
        health = httpx.get(f"{url}/++/health", timeout=5).json()
        if health.get("sharedState") == "up":
            seen.add(health["replica"])
    return seen


def test_two_replicas_answer_behind_the_balancer_sharing_redis(balancer):
    assert len(replicas(balancer)) == 2


def test_chat_and_stream_through_the_balancer(balancer):
    client = sdk(balancer)
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    assert completion.choices[0].message.content
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10, stream=True)
    chunks = [chunk for chunk in stream if chunk.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_a_configuration_change_reaches_both_replicas(balancer):
    # Through Redis: in compose the replicas know nothing else of each other.
    headers = {"api-key": KEY}
    added = {"deployments": {"image-test-added": {"model": "gpt-4o-mini", "tokensPerMinute": 60000}}}
    changed = httpx.patch(f"{balancer}/++/config", json=added, headers=headers, timeout=10)
    assert changed.status_code == 200, changed.text
    assert len(changed.json()["replicas"]) == 2, changed.text
    deadline = time.monotonic() + 10
    while True:  # each GET a connection of its own: both replicas answer some
        answers = [httpx.get(f"{balancer}/++/config", headers=headers, timeout=10) for _ in range(10)]
        knowing = sum("image-test-added" in answer.json().get("deployments", {}) for answer in answers)
        if knowing == len(answers) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert knowing == len(answers)
