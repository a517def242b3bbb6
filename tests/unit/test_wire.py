"""Azure's JSON answers stay JSON whatever a client's bytes were."""

import orjson

from aoai import wire


def test_an_error_quoting_bytes_that_are_not_utf8_is_still_json():
    # mitmproxy gives a header's undecodable bytes to Python as surrogates
    content_type = b"multipart/form-data; \xff\xfe".decode("utf-8", "surrogateescape")
    answer = wire.openai_error(400, f"Invalid Content-Type header ({content_type})")
    message = orjson.loads(answer.content)["error"]["message"]
    assert message.startswith("Invalid Content-Type header (multipart/form-data; ")
    assert wire.dumps({"k": [content_type]}) == b'{"k":["multipart/form-data; ??"]}'
