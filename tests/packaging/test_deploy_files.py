"""The deployment files, checked offline.

Kubernetes (deploy/k8s): every manifest parses and validates against the API schemas that
kubernetes-validate ships (strict: unknown fields fail); the pieces refer to each other
correctly (selectors, ports, Secret and ConfigMap keys, the Redis URL); the ConfigMap's
deployments file passes the simulator's own parser.

Azure (deploy/aca): no Bicep compiler can be had here (the `bicep` package on PyPI is an
unrelated machine-learning library; the real compiler is a download of its own), so the
.bicep files get a structural check: balanced brackets and closed strings, every parameter
and variable used, well-formed resource types and API versions, child resources under their
parents; `bicep build` runs too where a `bicep` CLI is on PATH. deploy.sh runs against a
stand-in `az` that records its calls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
ACA = ROOT / "deploy" / "aca"
DEPLOY_SH = ACA / "deploy.sh"
BICEP_FILES = sorted(ACA.glob("*.bicep"))
HEALTH = "/++/health"


# --- Kubernetes -------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[dict]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict:
    matches = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_k8s_manifests_parse():
    docs = manifests()
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        ("Deployment", "aoai-simulator"),
        ("Service", "aoai-simulator"),
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("ConfigMap", "aoai-simulator-deployments"),
        ("Secret", "aoai-simulator"),
    }
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d


def test_k8s_manifests_validate_against_the_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import all_versions

    # An older release many clusters still run, and the newest the package knows.
    versions = sorted({v for v in ("1.30.0", kv.latest_version()) if v in all_versions()})
    assert versions
    for doc in manifests():
        for version in versions:
            kv.validate(doc, version, strict=True)  # raises ValidationError naming the field


def test_schema_validation_catches_mistakes():
    kv = pytest.importorskip("kubernetes_validate")
    bad = find("Deployment", "aoai-simulator")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecs"] = 5
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    if shutil.which("kubectl"):  # kubectl's built-in kustomize renders it without a cluster
        done = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert len([d for d in yaml.safe_load_all(done.stdout) if d]) == len(manifests())


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def test_k8s_simulator_runs_three_replicas_with_a_shared_quota():
    sim = find("Deployment", "aoai-simulator")
    assert sim["spec"]["replicas"] == 3
    c = container(sim)
    env = env_of(c)
    assert env["SIMULATOR_REDIS_URL"]["value"] == "redis://redis:6379/0"
    # The URL's host and port are the Redis Service, and that Service reaches the Redis pods.
    redis_service = find("Service", "redis")
    assert [p["port"] for p in redis_service["spec"]["ports"]] == [6379]
    redis = find("Deployment", "redis")
    assert redis_service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    target = redis_service["spec"]["ports"][0]["targetPort"]
    assert target in [p.get("name") for p in container(redis)["ports"]] + [6379]


def test_k8s_services_select_their_pods_and_ports():
    for name in ("aoai-simulator", "redis"):
        deployment, service = find("Deployment", name), find("Service", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {p.get("name"): p["containerPort"] for p in container(deployment)["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    sim_port = find("Service", "aoai-simulator")["spec"]["ports"][0]
    assert sim_port["port"] == 8000


def test_k8s_probes_resources_and_user():
    for name in ("aoai-simulator", "redis"):
        c = container(find("Deployment", name))
        assert c["readinessProbe"] and c["livenessProbe"], name
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
        assert c["resources"]["limits"]["memory"], name
    sim = find("Deployment", "aoai-simulator")
    c = container(sim)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == 8000
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == HEALTH and (get["port"] == 8000 or ports.get(get["port"]) == 8000), probe
    # The image's user: runAsNonRoot can only verify a numeric USER (see the Dockerfile).
    assert sim["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert re.search(r"^USER 10001$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_k8s_key_and_deployments_file_come_from_the_secret_and_configmap():
    sim = find("Deployment", "aoai-simulator")
    c = container(sim)
    env = env_of(c)
    secret = find("Secret", "aoai-simulator")
    for name in ("SIMULATOR_API_KEY", "AZURE_OPENAI_KEY"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name

    configmap = find("ConfigMap", "aoai-simulator-deployments")
    volumes = {v["name"]: v for v in sim["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    config_volume = next(
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
    )
    path = env["OPENAI_DEPLOYMENT_CONFIG_PATH"]["value"]
    folder, _, key = path.rpartition("/")
    assert mounts[config_volume] == folder and key in configmap["data"]


def test_k8s_deployments_file_passes_the_simulators_parser():
    from aoai.runtime.config import parse_deployments

    configmap = find("ConfigMap", "aoai-simulator-deployments")
    deployments = parse_deployments(json.loads(configmap["data"]["deployments.json"]), "deployments.json")
    assert deployments["gpt-4o"].tokens_per_minute == 60000
    assert deployments["gpt-4o"].latency is not None


# --- Bicep ------------------------------------------------------------------------------------

OPENERS = {"(": ")", "[": "]", "{": "}"}
INTERPOLATION = "interpolation"


def bicep_code(text: str, where: str) -> str:
    """The code of a Bicep file with comments removed and string contents blanked (the code
    inside ${...} interpolations kept); fails on unbalanced brackets or unclosed strings."""
    out: list[str] = []
    stack: list[tuple[str, int]] = []
    in_string = False
    line = 1
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\n":
            line += 1
            assert not in_string, f"{where}:{line - 1}: string not closed on its line"
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c == "'":
                in_string = False
                out.append("'")
            elif text.startswith("${", i):
                stack.append((INTERPOLATION, line))
                in_string = False
                out.append(" ")
                i += 2
                continue
            elif c == "\n":
                out.append(c)
            i += 1
            continue
        if text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i)
            assert end >= 0, f"{where}:{line}: comment not closed"
            line += text.count("\n", i, end)
            i = end + 2
            continue
        assert not text.startswith("'''", i), f"{where}:{line}: multi-line strings are not checked here"
        if c == "'":
            in_string = True
            out.append("'")
        elif c in OPENERS:
            stack.append((OPENERS[c], line))
            out.append(c)
        elif c in ")]}":
            assert stack, f"{where}:{line}: {c!r} closes nothing"
            expected, opened = stack.pop()
            if expected == INTERPOLATION:
                assert c == "}", f"{where}:{line}: interpolation opened on line {opened} closed by {c!r}"
                in_string = True
                out.append(" ")
            else:
                assert c == expected, (
                    f"{where}:{line}: {c!r} closes a bracket from line {opened} that needs {expected!r}"
                )
                out.append(c)
        else:
            out.append(c)
        i += 1
    assert not in_string, f"{where}: a string is not closed"
    assert not stack, f"{where}: bracket opened on line {stack[-1][1]} is not closed"
    return "".join(out)


RESOURCE = re.compile(r"^resource\s+(\w+)\s+'([^'@]+)@([^']+)'(\s+existing)?\s*=", re.MULTILINE)
RESOURCE_TYPE = re.compile(r"^Microsoft\.[A-Za-z]+(/[A-Za-z]+)+$")
API_VERSION = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(-preview)?$")
DECLARATION = re.compile(r"^(param|var|output)\s+(\w+)\b", re.MULTILINE)


def bicep_params(text: str) -> dict[str, dict]:
    """Each parameter: its decorators, type and whether it has a default."""
    params = {}
    decorators: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("@"):
            decorators.append(line.split("(")[0])
            continue
        statement = re.match(r"(param|var|resource|output|targetScope)\b", line)
        if not statement:
            continue  # comments, blank lines, the rest of a multi-line decorator
        m = re.match(r"param\s+(\w+)\s+(\w+)(\s*=)?", line)
        if m:
            params[m.group(1)] = {"type": m.group(2), "default": bool(m.group(3)), "decorators": decorators}
        decorators = []
    return params


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_bicep_structure(path):
    text = path.read_text()
    code = bicep_code(text, path.name)
    words = re.findall(r"\b[A-Za-z_]\w*\b", code)

    declared = DECLARATION.findall(text)
    resources = RESOURCE.findall(text)
    # Parameters, variables and resources share one namespace; outputs have their own.
    symbols = [n for kind, n in declared if kind != "output"] + [r[0] for r in resources]
    outputs = [n for kind, n in declared if kind == "output"]
    assert len(symbols) == len(set(symbols)), f"{path.name}: a name is declared twice"
    assert len(outputs) == len(set(outputs)), f"{path.name}: an output is declared twice"
    for kind, name in declared:
        if kind in ("param", "var"):
            assert words.count(name) >= 2, f"{path.name}: {kind} {name} is never used"

    types = {}
    for symbol, rtype, version, _existing in resources:
        assert RESOURCE_TYPE.match(rtype), f"{path.name}: {symbol}: resource type {rtype!r}"
        assert API_VERSION.match(version), f"{path.name}: {symbol}: API version {version!r}"
        types[symbol] = rtype
    # A child names its parent, and its type extends the parent's type by one segment.
    for block in re.split(r"(?m)^resource\s+", text)[1:]:
        symbol = block.split()[0]
        parent = re.search(r"^\s+parent:\s*(\w+)", block, re.MULTILINE)
        if parent:
            assert parent.group(1) in types, f"{path.name}: {symbol}: parent {parent.group(1)} is not a resource"
            assert types[symbol].rsplit("/", 1)[0] == types[parent.group(1)], f"{path.name}: {symbol}"
    # What outputs read exists.
    for m in re.finditer(r"^output\s+\w+\s+\w+\s*=\s*(.+)$", text, re.MULTILINE):
        first = re.findall(r"\b[A-Za-z_]\w*\b", bicep_code(m.group(1), path.name))
        assert not first or first[0] in symbols, f"{path.name}: output reads {first[0]}"


def test_bicep_checker_catches_mistakes():
    with pytest.raises(AssertionError, match="closes a bracket"):
        bicep_code("var a = {\n  b: [1, 2}\n}\n", "bad.bicep")
    with pytest.raises(AssertionError, match="not closed"):
        bicep_code("var a = '${b'\n", "bad.bicep")
    with pytest.raises(AssertionError, match="not closed"):
        bicep_code("var a = {\n  b: 'x'\n", "bad.bicep")
    assert "b" in bicep_code("var a = 'x${b}y' // {\n", "ok.bicep")


def test_main_bicep_runs_the_simulator_as_asked():
    text = (ACA / "main.bicep").read_text()
    params = bicep_params(text)
    for secret in ("simulatorApiKey", "azureOpenAIKey"):
        assert "@secure" in params[secret]["decorators"], secret
    assert "param recordingDir string = '/mnt/simulator/recording'" in text
    assert "var mountPath = '/mnt/simulator'" in text and "mountPath: mountPath" in text
    assert "var port = 8000" in text and "targetPort: port" in text
    assert f"var healthPath = '{HEALTH}'" in text
    for probe in ("Liveness", "Readiness", "Startup"):
        assert f"type: '{probe}'" in text
    assert text.count("path: healthPath") == 3
    # The keys reach the container only as secret references.
    assert re.search(r"name: 'SIMULATOR_API_KEY'\s+secretRef: 'simulator-api-key'", text)
    assert re.search(r"name: 'AZURE_OPENAI_KEY'\s+secretRef: 'azure-openai-key'", text)
    assert re.search(r"name: 'RECORDING_DIR'\s+value: recordingDir", text)
    for rtype in (
        "Microsoft.App/containerApps",
        "Microsoft.App/managedEnvironments/storages",
        "Microsoft.Storage/storageAccounts/fileServices/shares",
        "Microsoft.ContainerRegistry/registries",
    ):
        assert f"'{rtype}@" in text, rtype


def bicep_cli() -> str | None:
    return shutil.which("bicep")


@pytest.mark.skipif(
    bicep_cli() is None,
    reason="no bicep CLI on PATH: it is a separate download, and the PyPI package named bicep is an unrelated library",
)
@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_bicep_compiles(path):
    done = subprocess.run(
        [bicep_cli(), "build", "--stdout", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resources"]


# --- deploy.sh --------------------------------------------------------------------------------


def test_deploy_sh_syntax():
    subprocess.run(["bash", "-n", str(DEPLOY_SH)], check=True, timeout=30)


def run_deploy(tmp_path: Path, env_text: str, path: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env_file = tmp_path / "deploy.env"
    env_file.write_text(textwrap.dedent(env_text))
    env = {"PATH": path, "ENV_FILE": str(env_file), "TMPDIR": str(tmp_path), "HOME": str(tmp_path), **(extra_env or {})}
    return subprocess.run(
        [shutil.which("bash"), str(DEPLOY_SH)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def tools_without_az(tmp_path: Path) -> str:
    """A PATH with the few tools deploy.sh needs and no az, whatever this machine has."""
    folder = tmp_path / "bin-no-az"
    folder.mkdir()
    for tool in ("dirname", "basename", "mktemp", "date", "tr", "rm", "cat", "sed"):
        (folder / tool).symlink_to(shutil.which(tool))
    return str(folder)


FAKE_AZ = """\
#!{python}
# Stands in for the Azure CLI: records each call and answers the queries deploy.sh makes.
import json, os, shutil, sys
args = sys.argv[1:]
call = {{"args": args, "storage_key": os.environ.get("AZURE_STORAGE_KEY")}}
for arg in args:
    if arg.startswith("@"):
        call["params"] = json.load(open(arg[1:]))
        call["params_file"] = arg[1:]
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps(call) + "\\n")
joined = " ".join(args)
if "registry.bicep" in joined:
    print("aoaisimregistry1")
elif "main.bicep" in joined:
    print("https://aoaisim-app.example\\naoaisim-app\\naoaisimstorage1\\nsimulator")
elif joined.startswith("storage account keys list"):
    print("c3RvcmFnZS1rZXk=")
elif joined.startswith("containerapp show"):
    print("aoaisim-app--rev1")
"""


@pytest.fixture
def fake_az(tmp_path):
    folder = tmp_path / "fake-az"
    folder.mkdir()
    az = folder / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable))
    az.chmod(0o755)
    log = tmp_path / "az-calls.jsonl"
    return {"path": f"{folder}{os.pathsep}{os.environ['PATH']}", "log": log, "env": {"FAKE_AZ_LOG": str(log)}}


def calls(fake) -> list[dict]:
    return [json.loads(line) for line in fake["log"].read_text().splitlines()] if fake["log"].exists() else []


def test_deploy_sh_says_when_az_is_missing(tmp_path):
    done = run_deploy(tmp_path, "AZURE_RESOURCE_GROUP=rg\n", tools_without_az(tmp_path))
    assert done.returncode == 1
    assert "Azure CLI (az) is not installed" in done.stderr


def test_deploy_sh_says_when_env_file_is_missing(tmp_path, fake_az):
    env = {"PATH": fake_az["path"], "ENV_FILE": str(tmp_path / "absent.env"), **fake_az["env"]}
    done = subprocess.run(["bash", str(DEPLOY_SH)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "absent.env" in done.stderr and "sample.env" in done.stderr
    assert calls(fake_az) == []


def test_deploy_sh_names_every_missing_value(tmp_path, fake_az):
    done = run_deploy(tmp_path, "SIMULATOR_MODE=record\nAZURE_LOCATION=\n", fake_az["path"], fake_az["env"])
    assert done.returncode == 1
    for name in (
        "AZURE_RESOURCE_GROUP",
        "AZURE_LOCATION",
        "SIMULATOR_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_KEY",
    ):
        assert name in done.stderr
    assert calls(fake_az) == []  # nothing was created


def test_deploy_sh_rejects_a_bad_base_name(tmp_path, fake_az):
    done = run_deploy(
        tmp_path,
        "AZURE_RESOURCE_GROUP=rg\nAZURE_LOCATION=x\nSIMULATOR_API_KEY=k\nAZURE_BASE_NAME=Bad_Name\n",
        fake_az["path"],
        fake_az["env"],
    )
    assert done.returncode == 1 and "AZURE_BASE_NAME" in done.stderr


def test_deploy_sh_deploys_in_order_with_the_env_values(tmp_path, fake_az):
    deployments = tmp_path / "my-deployments.json"
    deployments.write_text('{"gpt-4o": {"model": "gpt-4o"}}')
    done = run_deploy(
        tmp_path,
        f"""\
        # comments and blank lines are skipped

        AZURE_RESOURCE_GROUP=sim-rg
        export AZURE_LOCATION="swedencentral"
        SIMULATOR_API_KEY='s3cret "key"'
        AZURE_OPENAI_KEY=
        SIMULATOR_MODE=generate
        RECORDING_DIR=recordings
        OPENAI_DEPLOYMENT_CONFIG_PATH={deployments}
        LOG_LEVEL=DEBUG   # a comment after a value
        SIMULATOR_LATENCY=true
        SIMULATOR_SEED=
        """,
        fake_az["path"],
        fake_az["env"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "https://aoaisim-app.example" in done.stdout

    made = calls(fake_az)
    steps = [" ".join(c["args"][:3]) for c in made]
    assert steps == [
        "account show --output",
        "group create --name",
        "deployment group create",
        "acr build --registry",
        "deployment group create",
        "storage account keys",
        "storage file upload",
        "containerapp show --resource-group",
        "containerapp revision restart",
    ]
    group = made[1]["args"]
    assert group[group.index("--name") + 1] == "sim-rg" and group[group.index("--location") + 1] == "swedencentral"
    assert any(a.endswith("registry.bicep") for a in made[2]["args"])
    build = made[3]["args"]
    assert build[build.index("--registry") + 1] == "aoaisimregistry1"
    image = build[build.index("--image") + 1]
    assert image.startswith("aoai-simulator:")

    main = made[4]
    assert any(a.endswith("main.bicep") for a in main["args"])
    params = {k: v["value"] for k, v in main["params"]["parameters"].items()}
    assert params["simulatorApiKey"] == 's3cret "key"'  # quotes of .env removed, inner ones kept
    assert params["azureOpenAIKey"] == ""
    assert params["containerRegistryName"] == "aoaisimregistry1" and params["imageName"] == image
    assert params["recordingDir"] == "/mnt/simulator/recordings"  # a relative folder lands on the share
    assert params["deploymentConfigPath"] == "/mnt/simulator/my-deployments.json"
    assert params["extraEnv"] == {"LOG_LEVEL": "DEBUG", "SIMULATOR_LATENCY": "true"}
    # The keys never appear on a command line, and the parameters file is gone afterwards.
    assert all("s3cret" not in a for c in made for a in c["args"])
    assert not Path(main["params_file"]).exists()

    # Every parameter given exists in main.bicep, and every one without a default is given.
    bicep = bicep_params((ACA / "main.bicep").read_text())
    assert set(params) <= set(bicep)
    assert {n for n, p in bicep.items() if not p["default"]} <= set(params)

    upload = made[6]
    assert upload["storage_key"] == "c3RvcmFnZS1rZXk=" and "c3RvcmFnZS1rZXk=" not in upload["args"]
    assert upload["args"][upload["args"].index("--source") + 1] == str(deployments)
    assert upload["args"][upload["args"].index("--path") + 1] == "my-deployments.json"
    assert made[8]["args"][made[8]["args"].index("--revision") + 1] == "aoaisim-app--rev1"


def test_deploy_sh_without_a_deployments_file_skips_the_upload(tmp_path, fake_az):
    done = run_deploy(
        tmp_path, "AZURE_RESOURCE_GROUP=rg\nAZURE_LOCATION=x\nSIMULATOR_API_KEY=k\n", fake_az["path"], fake_az["env"]
    )
    assert done.returncode == 0, done.stderr
    made = calls(fake_az)
    assert [c["args"][0] for c in made] == ["account", "group", "deployment", "acr", "deployment"]
    params = {k: v["value"] for k, v in made[4]["params"]["parameters"].items()}
    assert params["recordingDir"] == "/mnt/simulator/recording" and params["deploymentConfigPath"] == ""
    assert params["simulatorMode"] == "generate" and params["extraEnv"] == {}


def test_build_context_leaves_out_keys_and_local_files():
    # `az acr build` uploads the build context: .env (keys) and the virtual environment stay home.
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".venv", ".git"} <= ignored


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_targets_run_the_scripts():
    done = subprocess.run(
        ["make", "-n", "deploy-aca"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0 and "deploy/aca/deploy.sh" in done.stdout, done.stdout + done.stderr
    done = subprocess.run(
        ["make", "-n", "loadtest", "LOADTEST_URL=http://127.0.0.1:1", "LOADTEST_KEY=k"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert 'loadtest/driver.py --url "http://127.0.0.1:1" --key "k"' in done.stdout


# --- workers: compose, HAProxy and the autoscaler ------------------------------------------------


def test_compose_runs_replicas_behind_haproxy_sharing_redis_and_a_recordings_volume():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "simulator", "balancer"}
    simulator = services["simulator"]
    assert simulator["environment"]["SIMULATOR_REDIS_URL"] == "redis://redis:6379/0"
    assert simulator["environment"]["RECORDING_FILE_SUFFIX"] == "{hostname}"  # replicas never share a file
    assert "recordings:/app/recordings" in simulator["volumes"] and "recordings" in compose["volumes"]
    assert services["balancer"]["ports"] == ["${BALANCER_PORT:-8000}:8000"]
    mounted = services["balancer"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).is_file()


@pytest.mark.skipif(
    shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin") is None,
    reason="haproxy is not installed (.ci/run installs it)",
)
def test_haproxy_accepts_the_compose_and_the_workers_configurations(tmp_path):
    from workers import haproxy_config, haproxy_path

    generated = tmp_path / "workers.cfg"
    generated.write_text(haproxy_config("127.0.0.1", 8000, [9001, 9002]))
    for config in (ROOT / "deploy" / "compose" / "haproxy.cfg", generated):
        done = subprocess.run(
            [haproxy_path(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_autoscaler_scales_the_simulator_deployment_on_cpu():
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    deployment = next(d for d in yaml.safe_load_all((K8S / "simulator.yaml").read_text()) if d["kind"] == "Deployment")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"]  # utilization is a share of the request
