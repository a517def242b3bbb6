"""Property tests for the body checks: any JSON value in any field of a valid request gives an
answer (accepted, or Azure's 4xx naming a field), never an exception."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_support import admit, chat_path, make_config, make_flow

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
BODIES = {
    chat_path(): {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "r"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "max_tokens": 5,
        "n": 1,
        "stop": ["x"],
        "response_format": {"type": "json_object"},
    },
    "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21": {"prompt": ["a"], "max_tokens": 3},
    "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21": {"input": ["a"], "dimensions": 8},
}


def places(value, prefix=()):
    """Every place in a JSON value a field could be replaced."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield prefix + (key,)
            yield from places(inner, prefix + (key,))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield prefix + (index,)
            yield from places(inner, prefix + (index,))


def replaced(body: dict, place: tuple, value) -> dict:
    body = copy.deepcopy(body)
    holder = body
    for step in place[:-1]:
        holder = holder[step]
    holder[place[-1]] = value
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_json_value_in_any_field_is_answered(data):
    path = data.draw(st.sampled_from(sorted(BODIES)))
    base = BODIES[path]
    place = data.draw(st.sampled_from(list(places(base))))
    body = replaced(base, place, data.draw(JSON))
    flow = make_flow("POST", path, body)
    error = admit(flow, make_config())  # raises if a check meets a type it does not expect
    if error is not None:
        assert 400 <= error.status_code < 500
        answer = json.loads(error.content)["error"]
        assert answer["message"]
        if answer.get("code") == "invalid_type":
            assert answer["param"], answer
