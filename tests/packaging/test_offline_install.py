"""The container image's install and start steps, carried out in a clean virtual environment
inside a network namespace with no network at all: only loopback. If the image would need
the internet to install from its wheels, to fill the encoding cache or to start, this fails.

The wheels are fetched first, outside the namespace, as a build would have them; everything
after that runs offline. Needs root for `unshare --net` (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a network namespace"
)

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_steps_are_the_ones_checked_here():
    # The script below mirrors these lines; if they change, change it too.
    assert "pip install -r requirements.txt" in DOCKERFILE
    assert "t.install_offline_encodings()" in DOCKERFILE
    assert "COPY scripts/workers.py scripts/simulator_process.py scripts/" in DOCKERFILE
    assert 'CMD ["python", "scripts/workers.py", "--", "--set", "confdir=/app/certs"]' in DOCKERFILE


def test_image_installs_and_starts_without_network(tmp_path):
    # One install, two starts: with the encoding cache left empty (the simulator fills it from
    # what it ships) and filled beforehand as the image's build step does.
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "-r", str(ROOT / "requirements.txt"), "-d", str(wheels)],
        check=True,
        timeout=300,
    )
    app = tmp_path / "app"
    shutil.copytree(ROOT / "addons", app / "addons", ignore=shutil.ignore_patterns("__pycache__"))
    (app / "scripts").mkdir()
    for name in ("workers.py", "simulator_process.py"):
        shutil.copy(ROOT / "scripts" / name, app / "scripts")
    shutil.copy(ROOT / "requirements.txt", app)
    fill_cache = (
        "python -c \"import sys; sys.path.insert(0, 'addons'); import aoai.openai.tokens as t; "
        't.install_offline_encodings()"'
    )
    script = textwrap.dedent(f"""\
        set -eu
        ip link set lo up
        cd {app}
        {sys.executable} -m venv venv
        . venv/bin/activate
        export RECORDING_DIR={app}/recordings SIMULATOR_API_KEY=k
        pip install --quiet --no-index --find-links {wheels} -r requirements.txt
        for variant in empty filled; do
          export TIKTOKEN_CACHE_DIR={app}/tiktoken_cache_$variant
          if [ $variant = filled ]; then {fill_cache}; fi
          python scripts/workers.py --listen-host 127.0.0.1 --port 18000 -- --set confdir={app}/certs \
            > mitmdump-$variant.log 2>&1 &
          python - <<'PY'
        import json, time, urllib.request
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:18000/++/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        body = json.dumps({{"messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 5}}).encode()
        request = urllib.request.Request(
            "http://127.0.0.1:18000/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            data=body, headers={{"api-key": "k", "content-type": "application/json"}})
        answer = json.load(urllib.request.urlopen(request, timeout=10))
        print("usage", answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])
        PY
          kill %1
          wait %1 || true
        done
        """)
    result = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True, timeout=300)
    logs = {
        v: (app / f"mitmdump-{v}.log").read_text() if (app / f"mitmdump-{v}.log").exists() else ""
        for v in ("empty", "filled")
    }
    assert result.returncode == 0, result.stdout + result.stderr + "".join(logs.values())
    assert result.stdout.count("usage 9 5") == 2, result.stdout
    for variant, log in logs.items():
        assert f"clients trust the CA file {app}/certs/mitmproxy-ca-cert.pem" in log  # the banner names it
        assert sorted(os.listdir(app / f"tiktoken_cache_{variant}")) == [
            "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
            "fb374d419588a4632f3f557e76b4b70aebbca790",
        ]
