"""Azure OpenAI simulator: mitmproxy addons that answer where Azure OpenAI would.

    mitmdump -s addons/simulator.py

A request passes the stages below in this order; each is one module in `aoai/`, and the
first stage to set a response ends the walk (later stages see `flow.response` and step aside).
"""

import os
import sys

# The stages live in the `aoai` package beside this file; keep it importable after mitmproxy
# restores sys.path, so extensions can import it too.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dotenv import load_dotenv  # noqa: E402

# .env in the working directory fills in what the environment does not set.
load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)

from aoai.auth import Auth  # noqa: E402
from aoai.config import SimulatorConfig  # noqa: E402
from aoai.extensions import Extensions  # noqa: E402
from aoai.flowcap import FlowCap  # noqa: E402
from aoai.generate import Generate  # noqa: E402
from aoai.latency import Gates  # noqa: E402
from aoai.management import Management  # noqa: E402
from aoai.metrics import Metrics  # noqa: E402
from aoai.notfound import NotFound  # noqa: E402
from aoai.pacing import Pacing  # noqa: E402
from aoai.ratelimit import Limits  # noqa: E402
from aoai.record import Record  # noqa: E402
from aoai.recording import RecordingStore  # noqa: E402
from aoai.replay import Replay  # noqa: E402
from aoai.routing import Routing  # noqa: E402
from aoai.settings import Settings  # noqa: E402
from aoai.streaming import Streaming, StreamServer  # noqa: E402

config = SimulatorConfig()
streams = StreamServer()  # plays paced streams (and serves those that go through mitmproxy's layers)
recordings = RecordingStore(config.recording.dir)

addons = [
    Settings(config),  # options and environment -> config; the listener
    Auth(config),  # api-key / Ocp-Apim-Subscription-Key / Bearer, or 401
    Routing(config),  # operation, deployment, body checks, prompt tokens, or 400/404
    Limits(config),  # Azure's quotas, before anything answers or forwards: 429, or quota headers
    Extensions(config),  # EXTENSION_PATH: user addons run here; initialize(config) shapes the rest
    Replay(config, recordings, streams),  # record and replay modes: answer what is recorded
    Record(config, recordings),  # record mode: forward the rest to Azure and save it
    Generate(config, streams, Gates()),  # generate mode: made-up answers, on time
    Streaming(streams, config),  # plays paced streams token by token
    Pacing(),  # holds other answers until due, after every hook that may change them
    Management(config, streams),  # /++/health, /++/config, /++/limits, /++/reset-limits, /++/save-recordings
    Metrics(config, streams),  # /++/metrics; counts and times every flow as it ends
    NotFound(config),  # nothing answered: 404 (record mode: on to Azure)
    FlowCap(),  # under mitmweb: keep only the newest flows in memory
]
