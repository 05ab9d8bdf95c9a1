"""``cnnlab serve RUN`` as a real process: the API, bad input, load, and the page in a real browser.

One server (the trained shapes run, PyTorch) answers every test of this module; each bad-input case
checks the status and message, then that the server still answers a good request.
"""

from __future__ import annotations

import http.client
import io
import re
import shutil
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect
from servers import Server, exchange, multipart, post_images, request, start_server

LOAD_REQUESTS, LOAD_CLIENTS, LOAD_SECONDS = 2000, 16, 90


@pytest.fixture(scope="module")
def server(trained_shapes) -> Server:
    running = start_server(
        trained_shapes[0], "--max-upload-mb", "1", "--max-files", "4", "--batching", "on", "--batch-window-ms", "5"
    )
    yield running
    running.stop(wait=False)


def _png(path: Path) -> bytes:
    return path.read_bytes()


def _bomb() -> bytes:
    """A 48 KB PNG that decodes to 100 Mpx (PIL's limit is 89 Mpx)."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw(server: Server, head: str, body_chunks: list[bytes]) -> int:
    """Status of a request sent over a plain socket, the body sent while the server may already refuse it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent: what we test
        reply = b""
        while b"\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    return int(reply.split(b" ", 2)[1])


def test_health_names_the_model_runtime_and_classes(server: Server) -> None:
    status, health = request(server.url, path="/health")
    assert status == 200
    assert health["classes"] == ["left", "middle", "right"] and health["runtime"] == "pytorch"
    assert health["gradcam"] is True and health["uptime_s"] >= 0 and health["limits"]["max_files"] == 4
    status, page = request(server.url, path="/")
    assert status == 200 and "<script>" in page and "http" not in page.split("<body>")[1].split("fetch(")[0]
    status, docs = request(server.url, path="/openapi.json")
    assert status == 200 and "/predict" in docs["paths"] and "multipart/form-data" in str(docs["paths"]["/predict"])


def test_no_key_and_no_cors_by_default_and_other_sites_pages_refused(server: Server, trained_shapes) -> None:
    status, health = request(server.url, path="/health")
    assert health["auth"]["api_key_required"] is False and health["cors_origins"] == []
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    status, headers, _ = exchange(server.url, "OPTIONS", "/predict", headers=preflight)
    assert status == 405 and not any(h.startswith("access-control-") for h in headers), headers
    _, headers, _ = exchange(server.url, "GET", "/health", headers={"Origin": "https://evil.example"})
    assert not any(h.startswith("access-control-") for h in headers), headers
    good = [("a.png", _png(trained_shapes[1] / "left" / "img_000.png"))]
    # What a browser sends with a form posted by another site's page (no preflight needed): refused.
    status, reply = post_images(
        server.url, good, headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403 and "--cors-origin" in reply["detail"], reply
    status, reply = post_images(server.url, good, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and reply["predictions"][0]["label"] == "left"  # the server's own page


def test_predictions_over_http_equal_cnnlab_predict(server: Server, trained_shapes, cli, tmp_path: Path) -> None:
    run, shapes = trained_shapes
    files = [shapes / name / f"img_{i:03d}.png" for name in ("left", "middle", "right") for i in (3, 7)]
    big = tmp_path / "big.jpg"  # a JPEG 5x the model's size: the decoder's draft path
    Image.open(files[0]).convert("RGB").resize((100, 100)).save(big, quality=90)
    files.append(big)
    code, out, err = cli("predict", run, *files, "--top-k", "3", "--format", "json")
    assert code == 0, err
    import json

    expected = json.loads(out)
    got = []
    for start in range(0, len(files), 4):  # this server takes 4 files per request
        status, body = post_images(server.url, [(p.name, _png(p)) for p in files[start : start + 4]], "/predict?k=3")
        assert status == 200, body
        got += body["predictions"]
    assert len(got) == len(expected) == 7
    for row, prediction in zip(expected, got):
        assert [t["class"] for t in prediction["top"]] == [t["class"] for t in row["top"]]
        for mine, theirs in zip(prediction["top"], row["top"]):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-5)
    assert sum(p["label"] == f.parent.name for p, f in zip(got, files[:6])) >= 5  # a trained model, not noise


BAD_INPUT = [  # (case, how to send it, status, words of the message)
    ("not an image", "text", 422, "not an image"),
    ("truncated PNG", "truncated", 422, "truncated PNG"),
    ("image bomb", "bomb", 422, "too large: 10000x10000 px"),
    ("over the limit, declared", "declared_big", 413, None),
    ("over the limit, streamed", "streamed_big", 413, None),
    ("wrong content type", "json", 415, "multipart/form-data"),
    ("empty body", "empty", 400, "empty"),
    ("missing field", "other_field", 422, "no 'image' field"),
    ("text instead of a file", "text_field", 422, "holds text"),
    ("too many files", "five_files", 400, "at most 4"),
    ("broken multipart", "no_boundary", 400, "could not be read"),
    ("bad k", "k_zero", 422, "query parameter 'k' must be a whole number from 1 to 1000 (classes per image), got '0'"),
    ("k not a number", "k_abc", 422, "query parameter 'k' must be a whole number from 1 to 1000"),
]


@pytest.mark.parametrize("case, how, status, words", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_4xx_json_error_and_the_server_goes_on(
    server: Server, trained_shapes, case, how, status, words
) -> None:
    good = _png(trained_shapes[1] / "left" / "img_000.png")
    megabyte = b"x" * (1024 * 1024)
    body, form_type = multipart([("big.png", megabyte + megabyte[: 1024 * 512])])
    sent = {
        "text": lambda: post_images(server.url, [("notes.png", b"just some text, not pixels")]),
        "truncated": lambda: post_images(server.url, [("cut.png", good[: len(good) // 2])]),
        "bomb": lambda: post_images(server.url, [("bomb.png", _bomb())]),
        "declared_big": lambda: (
            _raw(
                server,
                f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {form_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n",
                [body],
            ),
            None,
        ),
        "streamed_big": lambda: (
            _raw(
                server,
                f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {form_type}\r\nTransfer-Encoding: chunked\r\n\r\n",
                [
                    b"%x\r\n%s\r\n" % (len(part), part)
                    for part in (body[i : i + 65536] for i in range(0, len(body), 65536))
                ]
                + [b"0\r\n\r\n"],
            ),
            None,
        ),
        "json": lambda: request(
            server.url, "POST", "/predict", b'{"image": "x"}', {"Content-Type": "application/json"}
        ),
        "empty": lambda: request(server.url, "POST", "/predict", b"", {"Content-Type": form_type}),
        "other_field": lambda: request(server.url, "POST", "/predict", *_form("picture", good)),
        "text_field": lambda: request(server.url, "POST", "/predict", *_text_form()),
        "five_files": lambda: post_images(server.url, [(f"{i}.png", good) for i in range(5)]),
        "no_boundary": lambda: request(
            server.url, "POST", "/predict", body[:100], {"Content-Type": "multipart/form-data"}
        ),
        "k_zero": lambda: post_images(server.url, [("a.png", good)], "/predict?k=0"),
        "k_abc": lambda: post_images(server.url, [("a.png", good)], "/predict?k=abc"),
    }
    got, reply = sent[how]()
    assert got == status, reply
    if words is not None:  # one sentence, as every error of the server, with no nested parentheses
        assert isinstance(reply["detail"], str) and words in reply["detail"], reply
        assert _paren_depth(reply["detail"]) <= 1, reply
    after, prediction = post_images(server.url, [("a.png", good)])
    assert after == 200 and prediction["predictions"][0]["label"] == "left"


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        deepest = max(deepest, depth)
    return deepest


def test_the_page_and_the_api_default_to_predicts_k_capped_at_the_classes(server: Server, trained_shapes) -> None:
    status, page = request(server.url)
    assert status == 200
    k_input = next(line for line in page.splitlines() if 'id="k"' in line)
    assert 'max="3"' in k_input and 'value="3"' in k_input  # 3 classes: not the default 5
    status, reply = post_images(server.url, [("a.png", _png(trained_shapes[1] / "left" / "img_000.png"))])
    assert status == 200 and len(reply["predictions"][0]["top"]) == 3


def _form(field: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    body, kind = multipart([("a.png", data)], field)
    return body, {"Content-Type": kind}


def _text_form() -> tuple[bytes, dict[str, str]]:
    boundary = "b0undary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\nhello\r\n--{boundary}--\r\n'
    return body.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_load_2000_requests_from_16_clients_without_an_error(server: Server, trained_shapes) -> None:
    images = {name: _png(trained_shapes[1] / name / "img_010.png") for name in ("left", "middle", "right")}
    forms = {name: multipart([(f"{name}.png", data)]) for name, data in images.items()}
    latencies: list[float] = []
    failures: list[str] = []
    per_client = LOAD_REQUESTS // LOAD_CLIENTS
    deadline = time.monotonic() + LOAD_SECONDS

    def client(number: int) -> None:
        connection = http.client.HTTPConnection(server.url.split("//")[1], timeout=30)
        try:
            for i in range(per_client):
                if time.monotonic() > deadline:
                    failures.append("time limit")
                    return
                name = ("left", "middle", "right")[(number + i) % 3]
                body, kind = forms[name]
                sent = time.perf_counter()
                status, reply = request(
                    server.url, "POST", "/predict", body, {"Content-Type": kind}, connection=connection
                )
                latencies.append(time.perf_counter() - sent)
                if status != 200 or reply["predictions"][0]["label"] != name:
                    failures.append(f"{status}: {reply}")
        except OSError as exc:
            failures.append(repr(exc))
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(LOAD_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    assert not failures, failures[:5]
    assert len(latencies) == per_client * LOAD_CLIENTS == LOAD_REQUESTS
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered), ordered[int(0.99 * len(ordered)) - 1]
    _, health = request(server.url, path="/health")
    print(
        f"\nload: {len(latencies)} requests, {LOAD_CLIENTS} clients, {len(latencies) / took:.0f} req/s, "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, mean batch {health['batching']['mean_batch']}"
    )
    assert health["batching"]["mean_batch"] > 1  # concurrent requests were scored together


def test_the_page_in_chromium_classifies_an_upload(
    server: Server, trained_shapes, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
    try:
        page = context.new_page()  # a phone-sized screen
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
        assert "3 classes" in page.text_content("#model")
        page.keyboard.press("Tab")  # the keyboard reaches the picker first
        assert page.evaluate("document.activeElement.id") == "pick"
        page.set_input_files("#file", trained_shapes[1] / "right" / "img_004.png")
        expect(page.locator(".result .label:not(.pending)")).to_have_text("right")
        expect(page.locator(".result .bars li")).to_have_count(3)
        expect(page.locator(".result .runtime")).to_have_text("by PyTorch eager")  # which runtime answered
        page.locator(".result button").click()  # Grad-CAM on request
        page.wait_for_function("document.querySelector('img.cam')?.naturalWidth > 0")
        assert page.evaluate("document.querySelector('img.cam').naturalWidth") == 20
        expect(page.locator(".cam-caption")).to_have_text(
            re.compile(r"^Grad-CAM map for 'right' \(\d+\.\d%\), the class the PyTorch checkpoint answered$")
        )
        expect(page.locator(".cam-note")).to_have_count(0)  # the runtime is the checkpoint: nothing to add
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
        shot = page.screenshot(path=tmp_path / "page.png")
    finally:
        context.close()
    with Image.open(io.BytesIO(shot)) as image:
        assert image.size == (390, 844) and len(set(image.convert("L").getdata())) > 10


def test_the_api_docs_render_their_operations_with_no_network(server: Server, page: Page) -> None:
    """/docs loads Swagger UI from the server itself: every request to another host is cut off here, as
    on an offline machine, and the page still shows the operations."""
    elsewhere: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_server)
    page.goto(server.url + "/docs")
    expect(page.locator(".opblock")).to_have_count(3)  # /health, /predict, /explain
    summaries = " ".join(page.locator(".opblock-summary-path").all_text_contents())
    assert "/predict" in summaries and "/health" in summaries and "/explain" in summaries
    scripts = page.eval_on_selector_all("script[src], link[href]", "els => els.map(e => e.src || e.href)")
    assert scripts and all(url.startswith(server.url + "/docs-assets/") for url in scripts), scripts
    page.locator(".opblock-summary-path", has_text="/health").click()  # an operation opens
    expect(page.locator(".opblock-description-wrapper, .opblock-body").first).to_be_visible()
    assert not elsewhere, elsewhere


@pytest.mark.timeout(120)  # a server that started anyway would block
def test_refuses_to_start_without_a_usable_model(cli, run_copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(run_copy / "checkpoints")
    (tmp_path / "notes.onnx").write_text("not a model")
    for target, words in [
        (run_copy, "checkpoint"),
        (tmp_path / "nothing", "not"),
        (tmp_path / "notes.onnx", "not a readable ONNX model"),
    ]:
        code, _, err = cli("serve", target, "--port", "0")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (target, err)


@pytest.mark.timeout(120)
def test_a_port_in_use_is_a_one_line_error(cli, server: Server, trained_shapes) -> None:
    code, _, err = cli("serve", trained_shapes[0], "--port", str(server.port))
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "--port" in err
