"""The OpenAI domain, with no mitmproxy in it: the model catalogue, token counting, made-up
chat, completion and embedding answers, values that fit a JSON schema, and the body checks
Azure makes. Plain functions of plain data, tested without a proxy."""
