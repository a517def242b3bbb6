import hashlib
import os

import pytest

from aoai.openai import tokens

HELLO = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}]


@pytest.fixture(params=tokens.ENCODINGS)
def enc(request):
    return tokens.encoding(request.param)


def test_the_reference_prompt_counts_19_in_both_encodings(enc):
    assert tokens.count_chat_prompt(HELLO, enc) == 19


def test_each_message_adds_three_plus_its_values(enc):
    one = [{"role": "user", "content": "Hello!"}]
    # 3 priming + 3 per message + "user" (1) + "Hello!" (2)
    assert tokens.count_chat_prompt(one, enc) == 3 + 3 + 1 + 2
    assert tokens.count_chat_prompt(one * 3, enc) == 3 + 3 * (3 + 1 + 2)


def test_a_name_costs_its_tokens_plus_one(enc):
    plain = [{"role": "user", "content": "Hello!"}]
    named = [{"role": "user", "content": "Hello!", "name": "alice"}]
    assert tokens.count_chat_prompt(named, enc) - tokens.count_chat_prompt(plain, enc) == tokens.count("alice", enc) + 1


def test_content_parts_count_text_and_images(enc):
    as_string = [{"role": "user", "content": "Hello!"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}]
    assert tokens.count_chat_prompt(as_parts, enc) == tokens.count_chat_prompt(as_string, enc)
    low = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello!"},
                {"type": "image_url", "image_url": {"url": "x", "detail": "low"}},
            ],
        }
    ]
    high = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello!"},
                {"type": "image_url", "image_url": {"url": "x", "detail": "high"}},
            ],
        }
    ]
    base = tokens.count_chat_prompt(as_string, enc)
    assert tokens.count_chat_prompt(low, enc) == base + 85
    assert tokens.count_chat_prompt(high, enc) == base + 255


def test_assistant_tool_calls_are_counted(enc):
    without = [{"role": "assistant", "content": None}]
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    with_call = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    extra = 3 + tokens.count("get_weather", enc) + tokens.count('{"city": "Paris"}', enc)
    assert tokens.count_chat_prompt(with_call, enc) == tokens.count_chat_prompt(without, enc) + extra
    two = [{"role": "assistant", "content": None, "tool_calls": [call, call]}]
    assert tokens.count_chat_prompt(two, enc) == tokens.count_chat_prompt(without, enc) + 2 * extra


def test_tools_add_their_rendering(enc):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    with_tools = tokens.count_chat_prompt(HELLO, enc, tools)
    assert with_tools == 19 + tokens.count_tools(tools, enc)
    assert tokens.count_tools(tools, enc) > 9  # the namespace text plus 9 overhead tokens


def test_special_token_text_is_counted_as_text(enc):
    assert tokens.count("<|endoftext|>", enc) > 1


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Hello!", 2),
        (["Hello!", "Hello!"], 4),
        ([1, 2, 3, 4, 5], 5),
        ([[1, 2, 3], [4, 5]], 5),
    ],
)
def test_embedding_input_forms(enc, value, expected):
    assert tokens.count_embedding_input(value, enc) == expected


def test_install_offline_encodings_writes_files_named_by_sha1(tmp_path, monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)  # restored after the test
    target = tmp_path / "cache"
    assert tokens.install_offline_encodings(str(target)) == str(target)
    names = sorted(os.listdir(target))
    assert names == sorted(["9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "fb374d419588a4632f3f557e76b4b70aebbca790"])
    for name in tokens.ENCODINGS:
        url = tokens._URLS[name]
        assert tokens.cache_file_name(name) == hashlib.sha1(url.encode()).hexdigest()
    cl100k = hashlib.sha256((target / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4").read_bytes()).hexdigest()
    o200k = hashlib.sha256((target / "fb374d419588a4632f3f557e76b4b70aebbca790").read_bytes()).hexdigest()
    assert cl100k.startswith("223921b7") and cl100k.endswith("b2a7")
    assert o200k.startswith("446a9538") and o200k.endswith("1a2d")
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(target)


def test_install_offline_encodings_keeps_existing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    existing = tmp_path / tokens.cache_file_name("cl100k_base")
    existing.write_bytes(b"already here")
    tokens.install_offline_encodings(str(tmp_path))
    assert existing.read_bytes() == b"already here"
    assert (tmp_path / tokens.cache_file_name("o200k_base")).stat().st_size > 1_000_000
    assert len(os.listdir(tmp_path)) == 2  # no temporary file left behind
