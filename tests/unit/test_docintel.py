import base64
import json

import pytest
from mitmproxy.test import tflow

from aoai import generators
from aoai.docintel import layout as layout_engine
from aoai.docintel import service as docintel
from aoai.generators import docintel as docintel_generator
from aoai.runtime.config import SimulatorConfig
from aoai.stages import routing

HOST = "myresource.cognitiveservices.azure.com"
DI_VERSION = "2024-11-30"
FR_VERSION = "2023-07-31"


def analyze_path(
    model: str = "prebuilt-layout",
    family: str = "documentintelligence",
    version: str | None = DI_VERSION,
    query: str = "",
) -> str:
    version_query = f"?api-version={version}" if version is not None else "?"
    return f"/{family}/documentModels/{model}:analyze{version_query}{query}"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def service(**kwargs) -> tuple[docintel_generator.DocumentIntelligence, Clock]:
    clock = Clock()
    kwargs.setdefault("ready_base_s", 1.0)
    kwargs.setdefault("ready_per_10kb_s", 0.05)
    return docintel_generator.DocumentIntelligence(clock=clock, **kwargs), clock


def json_of(response):
    return json.loads(response.content)


def make_config(latency_enabled: bool = True) -> SimulatorConfig:
    return SimulatorConfig(api_key="unit-key", latency_enabled=latency_enabled)


def call(
    svc,
    method: str,
    path: str,
    *,
    raw: bytes | None = None,
    body=None,
    content_type: str | None = None,
    tls: bool = False,
    config=None,
):
    flow = tflow.tflow()
    flow.request.method, flow.request.path = method, path
    flow.request.headers.clear()
    flow.request.headers["host"] = HOST
    if content_type:
        flow.request.headers["content-type"] = content_type
    flow.request.content = json.dumps(body).encode() if body is not None else (raw or b"")
    flow.client_conn.timestamp_tls_setup = 1.0 if tls else None
    return svc(routing.resolve(flow, config or make_config()))


def result_path(response) -> str:
    location = response.headers["operation-location"]
    return location.split(HOST, 1)[1]


def analysis(
    model: str, pages=(1, 2), unit: str = "inch", seed: int = 7, family: str = "documentintelligence"
) -> layout_engine.Analysis:
    return layout_engine.Analysis("rid", family, model, DI_VERSION, "textElements", list(pages), unit, seed, 0.0, 0.0)


# --- where spans and polygons point ----------------------------------------------------------


def spanned(node, found=None):
    """Every (object, its spans) in a result, and every polygon."""
    found = found if found is not None else {"spans": [], "polygons": []}
    if isinstance(node, dict):
        if "span" in node:
            found["spans"].append((node, [node["span"]]))
        if "spans" in node and "content" in node:
            found["spans"].append((node, node["spans"]))
        if "polygon" in node:
            found["polygons"].append(node["polygon"])
        for value in node.values():
            spanned(value, found)
    elif isinstance(node, list):
        for value in node:
            spanned(value, found)
    return found


@pytest.mark.parametrize("model", sorted(layout_engine.MODELS))
@pytest.mark.parametrize("seed", range(4))
def test_every_span_indexes_its_own_content(model, seed):
    result = layout_engine.build_result(analysis(model, seed=seed))
    content = result["content"]
    found = spanned(result)
    assert len(found["spans"]) > 20
    for node, spans in found["spans"]:
        assert len(spans) == 1
        span = spans[0]
        assert content[span["offset"] : span["offset"] + span["length"]] == node["content"], node


@pytest.mark.parametrize("model", sorted(layout_engine.MODELS))
def test_pages_span_their_lines_and_words_sit_inside_lines(model):
    result = layout_engine.build_result(analysis(model, pages=(1, 2, 3)))
    content = result["content"]
    for page in result["pages"]:
        (page_span,) = page["spans"]
        start, end = page_span["offset"], page_span["offset"] + page_span["length"]
        lines = [line["spans"][0] for line in page["lines"]]
        assert lines[0]["offset"] == start
        assert lines[-1]["offset"] + lines[-1]["length"] == end
        assert content[start:end].split("\n") == [line["content"] for line in page["lines"]]
        words = " ".join(w["content"] for w in page["words"])
        assert words == " ".join(line["content"] for line in page["lines"])


@pytest.mark.parametrize("model", sorted(layout_engine.MODELS))
@pytest.mark.parametrize("unit", ["inch", "pixel"])
def test_polygons_have_eight_numbers_on_the_page(model, unit):
    result = layout_engine.build_result(analysis(model, unit=unit))
    polygons = spanned(result)["polygons"]
    assert polygons
    width, height = result["pages"][0]["width"], result["pages"][0]["height"]
    for polygon in polygons:
        assert len(polygon) == 8
        assert all(isinstance(v, (int, float)) for v in polygon)
        assert all(0 <= x <= width for x in polygon[0::2])
        assert all(0 <= y <= height for y in polygon[1::2])


def test_results_are_shaped_like_the_prebuilt_models():
    layout = layout_engine.build_result(analysis("prebuilt-layout"))
    assert layout["modelId"] == "prebuilt-layout" and layout["apiVersion"] == DI_VERSION
    assert layout["stringIndexType"] == "textElements" and layout["contentFormat"] == "text"
    assert [p["pageNumber"] for p in layout["pages"]] == [1, 2]
    page = layout["pages"][0]
    assert {"pageNumber", "width", "height", "unit", "angle", "lines", "words", "spans"} <= set(page)
    assert (page["width"], page["height"], page["unit"]) == (8.5, 11.0, "inch")
    assert layout["paragraphs"][0]["role"] == "title"
    table = layout["tables"][0]
    assert len(table["cells"]) == table["rowCount"] * table["columnCount"]
    assert table["cells"][0]["kind"] == "columnHeader"
    for cell in table["cells"]:
        (element,) = cell["elements"]
        assert layout["paragraphs"][int(element.rsplit("/", 1)[1])]["content"] == cell["content"]

    read = layout_engine.build_result(analysis("prebuilt-read", unit="pixel"))
    assert "tables" not in read and read["paragraphs"]
    assert (read["pages"][0]["width"], read["pages"][0]["unit"]) == (1700.0, "pixel")

    older = layout_engine.build_result(analysis("prebuilt-read", family="formrecognizer"))
    assert "contentFormat" not in older


def test_invoice_fields_are_typed_and_add_up():
    result = layout_engine.build_result(analysis("prebuilt-invoice"))
    (document,) = result["documents"]
    assert document["docType"] == "invoice"
    fields = document["fields"]
    assert fields["InvoiceId"]["type"] == "string" and fields["InvoiceId"]["valueString"].startswith("INV-")
    assert fields["InvoiceDate"]["valueDate"] < fields["DueDate"]["valueDate"]
    items = fields["Items"]["valueArray"]
    amounts = [item["valueObject"]["Amount"]["valueCurrency"]["amount"] for item in items]
    subtotal = fields["SubTotal"]["valueCurrency"]["amount"]
    assert subtotal == pytest.approx(sum(amounts))
    total = fields["InvoiceTotal"]["valueCurrency"]
    assert total == {
        "currencySymbol": "$",
        "currencyCode": "USD",
        "amount": pytest.approx(subtotal + fields["TotalTax"]["valueCurrency"]["amount"]),
    }
    assert 0 < document["confidence"] <= 1


def test_receipt_has_its_fields():
    (document,) = layout_engine.build_result(analysis("prebuilt-receipt"))["documents"]
    assert document["docType"].startswith("receipt")
    fields = document["fields"]
    assert fields["MerchantName"]["type"] == "string"
    assert fields["TransactionDate"]["type"] == "date" and fields["TransactionTime"]["type"] == "time"
    assert fields["Total"]["type"] == "currency"
    assert fields["Items"]["valueArray"][0]["valueObject"]["TotalPrice"]["valueCurrency"]["amount"] > 0


def test_the_same_analysis_gives_the_same_result():
    assert layout_engine.build_result(analysis("prebuilt-layout")) == layout_engine.build_result(
        analysis("prebuilt-layout")
    )
    assert (
        layout_engine.build_result(analysis("prebuilt-layout", seed=1))["content"]
        != layout_engine.build_result(analysis("prebuilt-layout", seed=2))["content"]
    )


# --- pure helpers ------------------------------------------------------------------------------


def test_pages_query():
    assert docintel.parse_pages("1-3,5, 7-8") == [1, 2, 3, 5, 7, 8]
    assert docintel.parse_pages("2") == [2]
    for bad in ("0", "3-1", "a", "1,,2"):
        with pytest.raises(docintel.Invalid):
            docintel.parse_pages(bad)


def test_ready_time_grows_with_size():
    small = docintel.ready_seconds(10_240, 1.0, 0.05)
    large = docintel.ready_seconds(1_024_000, 1.0, 0.05)
    assert small == pytest.approx(1.05)
    assert large == pytest.approx(6.0)


def test_page_count_and_unit_from_the_document():
    pdf = b"%PDF-1.7\n" + b"<< /Type /Page >>\n" * 3 + b"<< /Type /Pages >>"
    source = docintel.Source(pdf, None, "application/octet-stream")
    assert docintel.estimate_pages(source) == 3
    assert docintel.page_unit(source) == "inch"
    png = docintel.Source(b"\x89PNG" + b"\0" * 500_000, None, "application/octet-stream")
    assert docintel.estimate_pages(png) == 3
    assert docintel.page_unit(png) == "pixel"
    assert docintel.page_unit(docintel.Source(None, "https://example.com/a.JPG", "")) == "pixel"
    assert docintel.page_unit(docintel.Source(None, "https://example.com/a.pdf", "")) == "inch"


def test_store_drops_the_oldest():
    store = docintel.ResultStore(limit=3)
    for i in range(5):
        store.add(
            layout_engine.Analysis(
                str(i), "formrecognizer", "prebuilt-read", FR_VERSION, "textElements", [1], "inch", i, 0, 0
            )
        )
    assert len(store) == 3
    assert store.get("0") is None and store.get("1") is None and store.get("4") is not None


# --- the generator -------------------------------------------------------------------------------


def test_the_generator_runs_in_the_built_in_chain():
    assert docintel_generator.document_intelligence in generators.BUILT_IN
    assert (
        call(
            docintel_generator.document_intelligence,
            "POST",
            "/openai/deployments/gpt-4o/chat/completions?api-version=x",
            body={},
        )
        is None
    )


def test_analyze_answers_202_pointing_at_the_client_host_then_running_then_succeeded():
    svc, clock = service()
    document = b"%PDF-1.4\n" + b"x" * 20_480
    response = call(svc, "POST", analyze_path(), raw=document, content_type="application/pdf")
    assert response.status_code == 202
    assert response.content == b""
    location = response.headers["operation-location"]
    assert location.startswith(f"http://{HOST}/documentintelligence/documentModels/prebuilt-layout/analyzeResults/")
    assert location.endswith(f"?api-version={DI_VERSION}")
    assert response.headers["apim-request-id"] and response.headers["retry-after"] == "1"

    poll = call(svc, "GET", result_path(response))
    assert poll.status_code == 200
    body = json_of(poll)
    assert body["status"] == "running" and "analyzeResult" not in body
    assert body["createdDateTime"].endswith("Z") and poll.headers["retry-after"] == "1"

    clock.now += 1.0 + 0.05 * 2 - 0.01  # just before 1 s plus 0.05 s per 10 KB for 20 KB
    assert json_of(call(svc, "GET", result_path(response)))["status"] == "running"
    clock.now += 0.02
    body = json_of(call(svc, "GET", result_path(response)))
    assert body["status"] == "succeeded"
    assert body["analyzeResult"]["modelId"] == "prebuilt-layout"
    assert body["analyzeResult"]["tables"]


def test_a_client_over_tls_gets_an_https_location():
    svc, _ = service()
    response = call(svc, "POST", analyze_path(), raw=b"data", content_type="image/png", tls=True)
    assert response.headers["operation-location"].startswith(f"https://{HOST}/")


def test_a_larger_document_is_ready_later():
    svc, clock = service()
    small = call(svc, "POST", analyze_path(), raw=b"a" * 10_240, content_type="application/octet-stream")
    large = call(svc, "POST", analyze_path(), raw=b"a" * 204_800, content_type="application/octet-stream")
    clock.now += 1.5  # the small one was due after 1.05 s, the large one after 2 s
    assert json_of(call(svc, "GET", result_path(small)))["status"] == "succeeded"
    assert json_of(call(svc, "GET", result_path(large)))["status"] == "running"
    clock.now += 0.6
    assert json_of(call(svc, "GET", result_path(large)))["status"] == "succeeded"


def test_with_latency_off_the_result_is_ready_at_once():
    svc, _ = service()
    response = call(
        svc,
        "POST",
        analyze_path(),
        raw=b"a" * 100_000,
        content_type="application/pdf",
        config=make_config(latency_enabled=False),
    )
    assert json_of(call(svc, "GET", result_path(response)))["status"] == "succeeded"


def test_json_sources_and_the_older_path_family():
    svc, clock = service()
    by_url = call(
        svc,
        "POST",
        analyze_path("prebuilt-read", "formrecognizer", FR_VERSION),
        body={"urlSource": "https://example.com/scan.png"},
        content_type="application/json",
    )
    assert by_url.status_code == 202
    assert "/formrecognizer/documentModels/prebuilt-read/analyzeResults/" in by_url.headers["operation-location"]
    encoded = base64.b64encode(b"%PDF-1.7 " + b"<< /Type /Page >> " * 2).decode()
    by_bytes = call(
        svc, "POST", analyze_path("prebuilt-invoice"), body={"base64Source": encoded}, content_type="application/json"
    )
    assert by_bytes.status_code == 202
    clock.now += 100
    read = json_of(call(svc, "GET", result_path(by_url)))["analyzeResult"]
    assert read["apiVersion"] == FR_VERSION and read["pages"][0]["unit"] == "pixel"
    invoice = json_of(call(svc, "GET", result_path(by_bytes)))["analyzeResult"]
    assert len(invoice["pages"]) == 2 and invoice["documents"][0]["docType"] == "invoice"


def test_pages_and_string_index_type_are_honoured():
    svc, clock = service()
    response = call(
        svc,
        "POST",
        analyze_path(query="&pages=2-3,5&stringIndexType=utf16CodeUnit"),
        raw=b"doc",
        content_type="application/pdf",
    )
    clock.now += 100
    result = json_of(call(svc, "GET", result_path(response)))["analyzeResult"]
    assert [p["pageNumber"] for p in result["pages"]] == [2, 3, 5]
    assert result["stringIndexType"] == "utf16CodeUnit"


def test_unknown_model_is_404_model_not_found():
    svc, _ = service()
    for method, path in (
        ("POST", analyze_path("my-custom-model")),
        ("GET", "/documentintelligence/documentModels/nope/analyzeResults/x?api-version=2024-11-30"),
    ):
        response = call(svc, method, path, raw=b"doc", content_type="application/pdf")
        assert response.status_code == 404
        assert json_of(response) == {
            "error": {
                "code": "NotFound",
                "message": "Resource not found.",
                "innererror": {"code": "ModelNotFound", "message": "The requested model was not found."},
            }
        }


def test_unknown_result_is_404():
    svc, _ = service()
    missing = call(
        svc,
        "GET",
        "/documentintelligence/documentModels/prebuilt-read/analyzeResults/"
        "00000000-0000-0000-0000-000000000000?api-version=2024-11-30",
    )
    assert missing.status_code == 404
    error = json_of(missing)["error"]
    assert error["code"] == "NotFound" and error["innererror"]["code"] == "OperationNotFound"
    # A result asked for under another model is not found either.
    response = call(svc, "POST", analyze_path("prebuilt-read"), raw=b"doc", content_type="application/pdf")
    other = result_path(response).replace("prebuilt-read", "prebuilt-layout")
    assert call(svc, "GET", other).status_code == 404


def test_versions_outside_the_family_get_the_gateway_404():
    svc, _ = service()
    for path in (analyze_path(version=FR_VERSION), analyze_path(family="formrecognizer"), analyze_path(version=None)):
        response = call(svc, "POST", path, raw=b"doc", content_type="application/pdf")
        assert response.status_code == 404
        assert json_of(response)["error"]["code"] == "404"


@pytest.mark.parametrize(
    "raw, content_type, inner",
    [
        (b"%PDF-1.7 not json", "application/json", "ParameterMissing"),
        (json.dumps({"other": 1}).encode(), "application/json", "ParameterMissing"),
        (json.dumps({"base64Source": "***"}).encode(), "application/json", "InvalidParameter"),
        (json.dumps({"urlSource": "ftp://x/y.pdf"}).encode(), "application/json", "InvalidParameter"),
        (b"", "application/pdf", "InvalidContent"),
    ],
)
def test_bad_bodies_get_400(raw, content_type, inner):
    svc, _ = service()
    response = call(svc, "POST", analyze_path(), raw=raw, content_type=content_type)
    assert response.status_code == 400
    assert json_of(response)["error"]["innererror"]["code"] == inner


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://[::1/doc.pdf",
        "https://host:99999/doc.pdf",
        "https://host:port/doc.pdf",
        "https://host:0/doc.pdf",
        "http://",
        "https:///doc.pdf",
        "http://host/a b.pdf",
        "http://host/\u0000.pdf",
        "",
        "https://h/" + "x" * 9000,
        "javascript:alert(1)",
        12,
        ["https://h/a.pdf"],
        {"url": "https://h/a.pdf"},
        True,
    ],
)
def test_a_malformed_url_source_is_azures_400(url):
    svc, _ = service()
    response = call(
        svc, "POST", analyze_path(), raw=json.dumps({"urlSource": url}).encode(), content_type="application/json"
    )
    assert response.status_code == 400
    assert json_of(response)["error"] == {
        "code": "InvalidArgument",
        "message": "Invalid argument.",
        "innererror": {"code": "InvalidParameter", "message": "The parameter urlSource is invalid."},
    }


@pytest.mark.parametrize("source", [12, ["QUJD"], {"b": 1}, "not base64!", "QUJD\u00e9"])
def test_a_malformed_base64_source_is_azures_400(source):
    svc, _ = service()
    response = call(
        svc, "POST", analyze_path(), raw=json.dumps({"base64Source": source}).encode(), content_type="application/json"
    )
    assert response.status_code == 400
    assert json_of(response)["error"]["innererror"]["message"] == "The parameter base64Source is invalid."


def test_an_ipv6_url_source_is_taken():
    svc, _ = service()
    response = call(
        svc,
        "POST",
        analyze_path(),
        raw=json.dumps({"urlSource": "http://[::1]:8080/a.png"}).encode(),
        content_type="application/json",
    )
    assert response.status_code == 202


@pytest.mark.parametrize("pages", ["9" * 5000, "1-" + "9" * 5000, ",".join(["1"] * 200), "1-2,x", "-1", "3-1"])
def test_pages_beyond_reason_get_400(pages):
    svc, _ = service()
    response = call(svc, "POST", analyze_path(query=f"&pages={pages}"), raw=b"doc", content_type="application/pdf")
    assert response.status_code == 400
    assert json_of(response)["error"]["innererror"]["message"] == "The parameter pages is invalid."


def test_bad_pages_get_400():
    svc, _ = service()
    response = call(svc, "POST", analyze_path(query="&pages=0-2"), raw=b"doc", content_type="application/pdf")
    assert response.status_code == 400
    assert json_of(response)["error"]["innererror"] == {
        "code": "InvalidParameter",
        "message": "The parameter pages is invalid.",
    }


def test_other_methods_pass():
    svc, _ = service()
    assert call(svc, "GET", analyze_path()) is None
    assert (
        call(
            svc, "DELETE", "/documentintelligence/documentModels/prebuilt-read/analyzeResults/x?api-version=2024-11-30"
        )
        is None
    )


def test_make_generator_has_its_own_store_and_timing():
    clock = Clock()
    generator = docintel_generator.make_generator(ready_base_s=5, ready_per_10kb_s=0, clock=clock)
    assert generator.__name__ == "document_intelligence"
    response = call(generator, "POST", analyze_path(), raw=b"doc", content_type="application/pdf")
    clock.now += 4.9
    assert json_of(call(generator, "GET", result_path(response)))["status"] == "running"
    clock.now += 0.2
    assert json_of(call(generator, "GET", result_path(response)))["status"] == "succeeded"
    assert call(service()[0], "GET", result_path(response)).status_code == 404
