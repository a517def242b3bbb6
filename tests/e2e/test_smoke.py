from conftest import API_VERSION
from openai import AzureOpenAI


def test_chat_through_sdk(simulator):
    client = AzureOpenAI(azure_endpoint=simulator.url, api_key=simulator.key, api_version=API_VERSION)
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}], max_tokens=5)
    assert r.usage.completion_tokens == 5
    assert r.choices[0].finish_reason == "length"
