"""Document Intelligence end to end: the official SDK and plain HTTP against a real simulator."""

import time

import httpx
import pytest
from azure.ai.documentintelligence import DocumentIntelligenceClient
from azure.ai.documentintelligence.models import AnalyzeDocumentRequest, AnalyzeResult
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from conftest import start_simulator

# Three page objects: the simulator counts them to decide how many pages the result has.
PDF = b"%PDF-1.7\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % i for i in range(3)) + b"%%EOF\n"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Latency on: analyses take the simulator's default half second or so, so one SDK poll sees them done."""
    simulator = start_simulator(tmp_path_factory.mktemp("docintel"))
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim):
    with DocumentIntelligenceClient(endpoint=sim.url, credential=AzureKeyCredential(sim.key)) as c:
        yield c


def assert_spans_index_content(result: AnalyzeResult) -> None:
    content = result.content
    for page in result.pages:
        for word in page.words:
            assert content[word.span.offset : word.span.offset + word.span.length] == word.content
        for line in page.lines:
            (span,) = line.spans
            assert content[span.offset : span.offset + span.length] == line.content
    for paragraph in result.paragraphs or []:
        (span,) = paragraph.spans
        assert content[span.offset : span.offset + span.length] == paragraph.content


def test_layout_from_bytes_through_the_sdk(client):
    started = time.monotonic()
    poller = client.begin_analyze_document("prebuilt-layout", AnalyzeDocumentRequest(bytes_source=PDF))
    result = poller.result()
    assert time.monotonic() - started < 5
    assert poller.status() == "succeeded"
    assert result.model_id == "prebuilt-layout"
    assert result.api_version == "2024-11-30"
    assert [p.page_number for p in result.pages] == [1, 2, 3]
    page = result.pages[0]
    assert page.unit == "inch" and (page.width, page.height) == (8.5, 11)
    assert len(page.lines[0].polygon) == 8
    assert result.paragraphs and result.paragraphs[0].role == "title"
    table = result.tables[0]
    assert len(table.cells) == table.row_count * table.column_count
    assert table.cells[0].kind == "columnHeader"
    assert_spans_index_content(result)


def test_layout_from_raw_bytes_and_an_open_file_through_the_sdk(client, tmp_path):
    # The SDK sends bytes and files as application/octet-stream.
    assert len(client.begin_analyze_document("prebuilt-layout", PDF).result().pages) == 3
    path = tmp_path / "three-pages.pdf"
    path.write_bytes(PDF)
    with open(path, "rb") as f:
        result = client.begin_analyze_document("prebuilt-layout", f).result()
    assert len(result.pages) == 3 and result.tables


def test_read_from_a_url_through_the_sdk(client):
    poller = client.begin_analyze_document(
        "prebuilt-read", AnalyzeDocumentRequest(url_source="https://example.com/scan.png")
    )
    result = poller.result()
    assert result.model_id == "prebuilt-read"
    assert result.pages[0].unit == "pixel"
    assert not result.tables
    assert_spans_index_content(result)


def test_invoice_documents_through_the_sdk(client):
    result = client.begin_analyze_document("prebuilt-invoice", AnalyzeDocumentRequest(bytes_source=PDF)).result()
    (document,) = result.documents
    assert document.doc_type == "invoice"
    fields = document.fields
    total = fields["InvoiceTotal"].value_currency
    assert total.currency_code == "USD" and total.amount > 0
    assert fields["InvoiceDate"].value_date is not None
    assert fields["VendorName"].value_string
    items = fields["Items"].value_array
    assert items and items[0].value_object["Amount"].value_currency.amount > 0
    span = fields["InvoiceId"].spans[0]
    assert result.content[span.offset : span.offset + span.length] == fields["InvoiceId"].content


def test_unknown_model_through_the_sdk(client):
    with pytest.raises(ResourceNotFoundError) as raised:
        client.begin_analyze_document("my-custom-model", AnalyzeDocumentRequest(bytes_source=PDF))
    assert raised.value.status_code == 404
    assert raised.value.error.code == "NotFound"
    assert raised.value.error.innererror["code"] == "ModelNotFound"


def test_form_recognizer_paths_over_http(sim):
    headers = {
        "Ocp-Apim-Subscription-Key": sim.key,
        "content-type": "application/octet-stream",
        "host": "myresource.cognitiveservices.azure.com",
    }
    url = f"{sim.url}/formrecognizer/documentModels/prebuilt-receipt:analyze?api-version=2023-07-31"
    started = httpx.post(url, content=PDF, headers=headers)
    assert started.status_code == 202
    assert started.content == b""
    assert started.headers["apim-request-id"]
    location = started.headers["operation-location"]
    # The host the client named, kept by the proxy, not the address it connected to.
    prefix = (
        "http://myresource.cognitiveservices.azure.com/formrecognizer/documentModels/prebuilt-receipt/analyzeResults/"
    )
    assert location.startswith(prefix) and location.endswith("?api-version=2023-07-31")
    poll_url = sim.url + location.removeprefix("http://myresource.cognitiveservices.azure.com")
    key = {"Ocp-Apim-Subscription-Key": sim.key}

    first = httpx.get(poll_url, headers=key)
    assert first.status_code == 200
    assert first.json()["status"] == "running"
    assert int(first.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 5
    while (body := httpx.get(poll_url, headers=key).json())["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert body["status"] == "succeeded"
    assert {"createdDateTime", "lastUpdatedDateTime"} <= set(body)
    result = body["analyzeResult"]
    assert result["apiVersion"] == "2023-07-31" and result["modelId"] == "prebuilt-receipt"
    assert "contentFormat" not in result
    assert result["documents"][0]["fields"]["Total"]["type"] == "currency"

    missing = httpx.get(poll_url.replace(location.rsplit("/", 1)[1].split("?")[0], "no-such-result"), headers=key)
    assert missing.status_code == 404
    assert missing.json()["error"]["innererror"]["code"] == "OperationNotFound"


def test_unknown_model_and_missing_key_over_http(sim):
    url = f"{sim.url}/documentintelligence/documentModels/nope:analyze?api-version=2024-11-30"
    response = httpx.post(
        url, json={"urlSource": "https://example.com/a.pdf"}, headers={"Ocp-Apim-Subscription-Key": sim.key}
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "NotFound",
            "message": "Resource not found.",
            "innererror": {"code": "ModelNotFound", "message": "The requested model was not found."},
        }
    }
    assert httpx.post(url, json={"urlSource": "https://example.com/a.pdf"}).status_code == 401


def test_a_file_labelled_json_is_refused_as_azure_does(sim):
    url = f"{sim.url}/documentintelligence/documentModels/prebuilt-read:analyze?api-version=2024-11-30"
    response = httpx.post(
        url, content=PDF, headers={"Ocp-Apim-Subscription-Key": sim.key, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidArgument"
    assert response.json()["error"]["innererror"]["code"] == "ParameterMissing"
