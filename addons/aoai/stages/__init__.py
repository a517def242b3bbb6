"""The stages, one module each. Their order is the list in `aoai.stack.build_stages` (the one
place it is written). A stage is a small mitmproxy addon whose hooks stay short; the logic
it calls lives in the runtime and the domains."""
