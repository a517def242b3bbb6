import base64
import math
import random
import struct

import pytest

from aoai.openai import embeddings


def body(items, dims=8, fmt="float", model="text-embedding-3-small"):
    return embeddings.response_body(items, model, model + "-v", dims, fmt, 7)


@pytest.mark.parametrize("dims", [1, 3, 256, 1536])
def test_vectors_have_unit_length(dims):
    vec = body(["Hello"], dims)["data"][0]["embedding"]
    assert len(vec) == dims
    assert math.isclose(math.fsum(v * v for v in vec), 1.0, rel_tol=1e-5)


def test_same_input_same_vector_and_different_input_different_vector():
    a = body(["Hello", "Hello", "Bye"])["data"]
    assert a[0]["embedding"] == a[1]["embedding"] == body(["Hello"])["data"][0]["embedding"]
    assert a[0]["embedding"] != a[2]["embedding"]
    # The model and the size are part of the key.
    assert body(["Hello"], model="text-embedding-3-large")["data"][0]["embedding"] != a[0]["embedding"]


def test_token_inputs_are_vectors_of_their_own():
    a = body([[1, 2, 3]])["data"][0]["embedding"]
    b = body([[1, 2, 4]])["data"][0]["embedding"]
    assert a != b and len(a) == 8


def test_base64_decodes_to_the_float_list_as_float32():
    floats = body(["Hello", "Bye"], dims=16)["data"]
    packed = body(["Hello", "Bye"], dims=16, fmt="base64")["data"]
    for f, p in zip(floats, packed, strict=False):
        raw = base64.b64decode(p["embedding"])
        assert len(raw) == 16 * 4
        decoded = list(struct.unpack("<16f", raw))
        assert decoded == f["embedding"]


def test_response_shape():
    out = body(["a", "b", "c"])
    assert out["object"] == "list"
    assert out["model"] == "text-embedding-3-small-v"
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in out["data"])
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a", ["a"]),
        ([1, 2], [[1, 2]]),
        (["a", "b"], ["a", "b"]),
        ([[1], [2]], [[1], [2]]),
    ],
)
def test_items_of(value, expected):
    assert embeddings.items_of(value) == expected


def test_token_arrays_decoded_together_give_each_inputs_own_key():
    # One call into tiktoken for all arrays (many brief calls starve the event loop's thread);
    # the keys, and so the vectors, are exactly those of each input decoded alone.
    rng = random.Random(5)
    model = "text-embedding-3-large"
    items = [[rng.randrange(100_000) for _ in range(rng.randrange(1, 30))] for _ in range(50)]
    items[10] = "a string between them"
    items.append([100257])  # a special token
    assert embeddings.keys_of(model, 256, items) == [embeddings._key(model, 256, item) for item in items]
    outside = [[1, 2], [10**9]]  # ids beyond the vocabulary: one by one, as before
    assert embeddings.keys_of(model, 256, outside) == [embeddings._key(model, 256, item) for item in outside]
