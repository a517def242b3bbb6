"""The route table: one declaration per API, matched as Azure matches paths."""

import pytest

from aoai.runtime import routes
from aoai.runtime.routes import TABLE


@pytest.mark.parametrize(
    "method, path, operation, params",
    [
        ("POST", "/openai/deployments/gpt-4o/chat/completions", "chat", {"deployment": "gpt-4o"}),
        ("POST", "/openai/deployments/gpt-4o/chat/completions/", "chat", {"deployment": "gpt-4o"}),
        ("POST", "/OpenAI/Deployments/gpt-4o/Chat/Completions?api-version=x", "chat", {"deployment": "gpt-4o"}),
        ("POST", "/openai/deployments/my%20dep/completions", "completions", {"deployment": "my dep"}),
        ("POST", "/openai/deployments/a%2Fb/embeddings", "embeddings", {"deployment": "a/b"}),
        ("POST", "/openai/v1/chat/completions", "chat", {}),
        ("POST", "/openai/v1/embeddings/", "embeddings", {}),
        ("GET", "/openai/v1/models", "models", {}),
        (
            "POST",
            "/documentintelligence/documentModels/prebuilt-read:analyze",
            "document_intelligence",
            {"family": "documentintelligence", "model": "prebuilt-read"},
        ),
        (
            "POST",
            "/DocumentIntelligence/documentModels/prebuilt-read:analyze/",
            "document_intelligence",
            {"family": "documentintelligence", "model": "prebuilt-read"},
        ),
        (
            "POST",
            "/formrecognizer/documentModels/prebuilt-read%3Aanalyze?api-version=2023-07-31",
            "document_intelligence",
            {"family": "formrecognizer", "model": "prebuilt-read"},
        ),
        (
            "GET",
            "/formrecognizer/documentModels/m1/analyzeResults/abc",
            "document_intelligence",
            {"family": "formrecognizer", "model": "m1", "result": "abc"},
        ),
        ("GET", "/++/health", "health", {}),
        ("PATCH", "/++/config/", "config", {}),
        ("POST", "/openai/deployments/whisper/audio/translations", "translations", {"deployment": "whisper"}),
        ("POST", "/openai/v1/audio/transcriptions", "transcriptions", {}),
        ("POST", "/openai/deployments/dall-e-3/images/generations", "images", {"deployment": "dall-e-3"}),
        ("GET", "/++/images/ab12.png", "image_file", {"image": "ab12.png"}),
    ],
)
def test_resolve(method, path, operation, params):
    found = TABLE.resolve(method, path)
    assert found.route.operation == operation
    assert found.params == params


@pytest.mark.parametrize(
    "path",
    [
        "/openai/deployments/gpt-4o/images/variations",
        "/openai/deployments//chat/completions",
        "/openai/deployments/a/b/chat/completions",
        "/chat/completions",
        "/++/nothing",
        "/documentintelligence/documentModels/m1",
        "/other/documentModels/m1:analyze",
    ],
)
def test_other_paths_have_no_route(path):
    assert TABLE.resolve("POST", path) is None


def test_a_known_path_with_another_method_names_the_methods_it_takes():
    found = TABLE.resolve("GET", "/openai/deployments/gpt-4o/chat/completions")
    assert found.route is None and found.allowed == ("POST",)
    assert found.params == {"deployment": "gpt-4o"}
    assert TABLE.resolve("DELETE", "/++/config").allowed == ("GET", "PATCH")


def test_every_route_declares_what_the_stages_read():
    for route in routes.ROUTES:
        assert route.methods and route.family in (routes.OPENAI, routes.DOCUMENT_INTELLIGENCE, routes.MANAGEMENT)
        if route.family == routes.MANAGEMENT:
            continue
        # Files and batches: the Batches stage; WebSocket handshakes: the realtime stage.
        assert route.generator or route.from_data_folder or route.websocket, route
        assert route.recording, route
        if route.quota != routes.NO_QUOTA:
            assert route.azure_operation, route
        if route.needs_deployment:
            assert route.check and route.prompt_tokens and route.verb
            # A realtime handshake is a request against the deployment's quota; its tokens are
            # charged as its responses end.
            assert route.quota == routes.DEPLOYMENT_QUOTA


@pytest.mark.parametrize(
    "path, canonical",
    [
        ("/openai/deployments/gpt-4o/chat/completions/", "/openai/deployments/gpt-4o/chat/completions"),
        ("/OPENAI/deployments/gpt-4o/Chat/completions?x=1", "/openai/deployments/gpt-4o/chat/completions"),
        (
            "/DocumentIntelligence/documentmodels/prebuilt-read%3Aanalyze",
            "/documentintelligence/documentModels/prebuilt-read:analyze",
        ),
        ("/somewhere/else/", "/somewhere/else/"),
    ],
)
def test_canonical_paths_make_variants_one_recording(path, canonical):
    assert TABLE.canonical_path("POST", path) == canonical


@pytest.mark.parametrize(
    "method, path, file",
    [
        ("POST", "/openai/deployments/gpt-4o/chat/completions", "gpt-4o.chat-completions.yaml"),
        ("POST", "/openai/v1/embeddings", "v1.embeddings.yaml"),
        (
            "POST",
            "/DocumentIntelligence/documentModels/prebuilt-read:analyze",
            "documentintelligence.prebuilt-read.yaml",
        ),
        ("GET", "/formrecognizer/documentModels/prebuilt-read/analyzeResults/x", "formrecognizer.prebuilt-read.yaml"),
    ],
)
def test_recording_files_are_named_by_the_route(method, path, file):
    found = TABLE.resolve(method, path)
    assert found.route.recording_file(found.params) == file


def test_replicas_sharing_a_folder_write_files_of_their_own(tmp_path):
    from aoai.runtime.recording import RecordingStore

    store = RecordingStore(tmp_path)
    assert store.file_for("POST", "/openai/deployments/gpt-4o/chat/completions") == "gpt-4o.chat-completions.yaml"
    store.file_suffix = "replica-7f9c"
    assert (
        store.file_for("POST", "/openai/deployments/gpt-4o/chat/completions")
        == "gpt-4o.chat-completions.replica-7f9c.yaml"
    )
    assert store.file_for("GET", "/somewhere/else") == "other.somewhere-else.replica-7f9c.yaml"
