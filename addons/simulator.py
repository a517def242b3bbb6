"""Azure OpenAI simulator: mitmproxy addons that answer where Azure OpenAI would.

    mitmdump -s addons/simulator.py

A request passes the stages below in this order, one module each in `aoai/stages/`; the
first stage to set a response ends the walk (later stages see `flow.response` and step
aside). Routing resolves the request against the route table (`aoai/runtime/routes.py`)
once, into a typed `RequestContext` that every later stage reads. Each stage's flow hooks
are guarded: an exception ends that request with Azure's 500 instead of sending it upstream.
"""

import os
import sys

# The `aoai` package lives beside this file; keep it importable after mitmproxy restores
# sys.path, so extensions can import it too.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dotenv import load_dotenv

# .env in the working directory fills in what the environment does not set.
load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)

from aoai.runtime.startup import Startup  # noqa: E402
from aoai.stages.settings import preflight  # noqa: E402

# A bad setting stops the process at once, before the rest loads (mitmproxy is already listening).
startup = Startup(exit_process=True)
preflight(startup)

from aoai.runtime.config import SimulatorConfig  # noqa: E402
from aoai.runtime.failures import guard  # noqa: E402
from aoai.runtime.latency import Gates  # noqa: E402
from aoai.runtime.recording import RecordingStore  # noqa: E402
from aoai.runtime.streams import StreamServer  # noqa: E402
from aoai.stages.auth import Auth  # noqa: E402
from aoai.stages.checks import Checks  # noqa: E402
from aoai.stages.contentfilter import ContentFilter  # noqa: E402
from aoai.stages.extensions import Extensions  # noqa: E402
from aoai.stages.faults import Faults, FaultTiming  # noqa: E402
from aoai.stages.flowcap import FlowCap  # noqa: E402
from aoai.stages.generate import Generate  # noqa: E402
from aoai.stages.intake import Intake  # noqa: E402
from aoai.stages.management import Management  # noqa: E402
from aoai.stages.metrics import Metrics  # noqa: E402
from aoai.stages.notfound import NotFound  # noqa: E402
from aoai.stages.pacing import Pacing  # noqa: E402
from aoai.stages.ratelimit import Limits  # noqa: E402
from aoai.stages.reclaim import Reclaim  # noqa: E402
from aoai.stages.record import ForwardTarget, Record  # noqa: E402
from aoai.stages.replay import Replay  # noqa: E402
from aoai.stages.routing import Routing  # noqa: E402
from aoai.stages.settings import Settings  # noqa: E402
from aoai.stages.streaming import Streaming  # noqa: E402

# What the stages share, passed to each that needs it.
config = SimulatorConfig()  # the configuration; extensions receive it in initialize(config)
streams = StreamServer()  # plays paced streams (and serves those that go through mitmproxy's layers)
recordings = RecordingStore(config.recording.dir)
limits = Limits(config, startup=startup)
extensions = Extensions(config, startup)

addons = [
    Settings(config, startup),  # options and environment -> config; the listener
    Routing(config),  # the request's route (operation, path parameters) -> its RequestContext
    Auth(config),  # api-key / Ocp-Apim-Subscription-Key / Bearer, or 401 (open routes: none needed)
    Intake(config),  # bodies, heads and their time bounded before they are read: 413, 431, 408; bodies decoded
    Checks(),  # what Azure refuses first: 405, api-version, body, deployment, fields, context length
    limits,  # Azure's quotas, before anything answers or forwards: 429, or quota headers (a quota cut lowers them)
    ContentFilter(config),  # prompts the deployment's content filter blocks: Azure's 400 (not in record mode)
    Faults(config),  # declared faults that answer an admitted request: 500, 503, timeouts, hangs, too long
    extensions,  # EXTENSION_PATH: user addons run here; initialize(config) shapes the rest
    ForwardTarget(config, startup),  # record mode needs AZURE_OPENAI_ENDPOINT or an extension's forwarder
    Replay(config, recordings, streams, startup),  # record and replay modes: answer what is recorded
    Record(config, recordings, streams),  # record mode: forward the rest to Azure and save it
    Generate(config, streams, Gates()),  # generate mode: made-up answers, on time
    FaultTiming(config),  # declared faults that reshape an answer: slow first byte, trickle, stream cut
    Streaming(streams, lambda: extensions.sees_streams),  # plays paced streams token by token
    Pacing(),  # holds other answers until due, after every hook that may change them
    Management(config, streams, limits, recordings),  # /++/health, /++/config, /++/limits, /++/reset-limits, …
    Metrics(config, streams, limits),  # /++/metrics; counts and times every flow as it ends
    NotFound(config),  # nothing answered: 404, so generate and replay never go upstream
    FlowCap(config),  # under mitmweb: keep only the newest flows in memory (by count and bytes)
    Reclaim(),  # the memory of large requests goes back to the system soon after they end
]
for stage in addons:
    guard(stage)
