"""The stages, one module each, in the order `addons/simulator.py` stacks them: settings,
routing, auth, checks, ratelimit, extensions, replay, record, generate, streaming, pacing,
management, metrics, notfound, flowcap. A stage is a small mitmproxy addon whose hooks stay
short; the logic it calls lives in the runtime and the domains."""
