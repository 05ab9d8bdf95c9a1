"""Serving beyond localhost (issue #35): the API key, CORS and other sites, TLS, the bounded queue, the access log.

Every server here listens on 127.0.0.1 on a free port and is stopped by its test or module. One
server with a key and one allowed origin answers most tests; TLS and the slow model get their own.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import Page
from servers import Server, exchange, multipart, post_images, request, start_server

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.serving.server import exposure_warnings
from cnnlab.serving.settings import ServeSettings, key_file_warning

HERE = Path(__file__).resolve().parent
KEY = "test-" + secrets.token_hex(16)
ALLOWED = "https://app.example.com"
ACCESS_LINE = re.compile(
    r'^INFO: +127\.0\.0\.1:\d+ - "(GET|POST|OPTIONS) (\S+) HTTP/1\.1" (\d{3}) [A-Za-z ]+ '
    r"(\d+\.\d) ms$"
)


@pytest.fixture(scope="module")
def keyed(trained_shapes) -> Server:
    """A server that needs KEY (from the environment) and lets ALLOWED's pages call it."""
    running = start_server(
        trained_shapes[0], "--cors-origin", ALLOWED + "/", "--batching", "off", env={"CNNLAB_API_KEY": KEY}
    )
    yield running
    running.stop(wait=False)


def _image(trained_shapes, name: str = "left", number: int = 5) -> tuple[str, bytes]:
    path = trained_shapes[1] / name / f"img_{number:03d}.png"
    return path.name, path.read_bytes()


def test_predict_and_explain_need_the_key_in_either_header(keyed: Server, trained_shapes) -> None:
    image = _image(trained_shapes)
    for path in ("/predict", "/explain"):
        body, kind = multipart([image])
        status, headers, reply = exchange(keyed.url, "POST", path, body, {"Content-Type": kind})
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), reply
        assert "Authorization: Bearer KEY" in reply["detail"] and "X-API-Key: KEY" in reply["detail"]
        for wrong in (
            {"Authorization": "Bearer " + KEY[:-1] + "x"},
            {"X-API-Key": KEY + "x"},
            {"Authorization": "Basic " + KEY},
        ):
            status, reply = post_images(keyed.url, [image], path, headers=wrong)
            assert status == 401, (wrong, reply)
            assert KEY not in str(reply)  # the key is never echoed
    status, reply = post_images(keyed.url, [image], headers={"Authorization": "Bearer " + KEY})
    assert status == 200 and reply["predictions"][0]["label"] == "left", reply
    status, reply = post_images(keyed.url, [image], headers={"X-API-Key": KEY})
    assert status == 200 and reply["predictions"][0]["label"] == "left", reply
    status, reply = post_images(keyed.url, [image], "/explain", headers={"authorization": "bearer " + KEY})
    assert status == 200 and reply["overlay"].startswith("data:image/png;base64,"), reply
    status, health = request(keyed.url, path="/health")  # open, and says a key is needed
    assert status == 200 and health["auth"]["api_key_required"] is True and "Bearer" in health["auth"]["how"]
    assert health["auth"]["unauthorized"] >= 8 and KEY not in str(health)
    assert request(keyed.url, path="/")[0] == 200


def test_cors_headers_only_for_the_allowed_origin_and_other_sites_refused(keyed: Server, trained_shapes) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    status, headers, _ = exchange(keyed.url, "OPTIONS", "/predict", headers={"Origin": ALLOWED, **preflight})
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED
    assert "authorization" in headers["access-control-allow-headers"].lower()
    for other in ("https://evil.example", "http://app.example.com", "https://app.example.com:8443"):
        # Starlette still names the methods; without Access-Control-Allow-Origin a browser allows nothing.
        status, headers, _ = exchange(keyed.url, "OPTIONS", "/predict", headers={"Origin": other, **preflight})
        assert status == 400 and "access-control-allow-origin" not in headers, (other, headers)
        _, headers, _ = exchange(keyed.url, "GET", "/health", headers={"Origin": other})
        assert "access-control-allow-origin" not in headers, (other, headers)
    image = _image(trained_shapes, "middle", 9)
    body, kind = multipart([image])
    # What a browser sends for a page of the allowed site, then for another site's page.
    from_site = {"Content-Type": kind, "Authorization": "Bearer " + KEY, "Sec-Fetch-Site": "cross-site"}
    status, headers, reply = exchange(keyed.url, "POST", "/predict", body, {**from_site, "Origin": ALLOWED})
    assert status == 200 and headers["access-control-allow-origin"] == ALLOWED, reply
    status, headers, reply = exchange(
        keyed.url, "POST", "/predict", body, {**from_site, "Origin": "https://evil.example"}
    )
    assert status == 403 and "--cors-origin" in reply["detail"], reply
    assert "access-control-allow-origin" not in headers


def test_the_key_never_reaches_the_log(keyed: Server, trained_shapes) -> None:
    image = _image(trained_shapes, "right", 11)
    for headers in ({"Authorization": "Bearer " + KEY}, {"X-API-Key": KEY}, {"X-API-Key": KEY + "-wrong"}):
        post_images(keyed.url, [image], headers=headers)
    post_images(keyed.url, [image], f"/predict?k=2&api_key={KEY}", headers={"X-API-Key": KEY})  # a careless client
    last = keyed.wait_for_line("/predict?k=2&api_key=")
    assert "api_key=[api-key] " in last and KEY not in last
    output = keyed.output()
    assert KEY not in output and KEY[5:20] not in output
    lines = [line.rstrip("\n") for line in keyed.lines if '" 200 ' in line or '" 401 ' in line]
    assert len(lines) >= 4 and all(ACCESS_LINE.match(line) for line in lines), [
        line for line in lines if not ACCESS_LINE.match(line)
    ]
    assert any(
        ACCESS_LINE.match(line).group(2) == "/predict" and ACCESS_LINE.match(line).group(3) == "401" for line in lines
    )
    assert "API key required (from $CNNLAB_API_KEY)" in output


def test_the_page_asks_for_the_key_once_and_keeps_it_for_the_session(keyed: Server, trained_shapes, page: Page) -> None:
    newest_label = (
        "(() => { const l = document.querySelector('.result .label'); "
        "return l && !l.classList.contains('pending') && l.textContent; })()"
    )

    def label_of(image: Path) -> str:
        page.set_input_files("#file", image)
        return page.wait_for_function(newest_label).json_value()

    page.goto(keyed.url + "/")
    page.wait_for_function("!document.getElementById('key-form').hidden")
    assert page.evaluate("document.activeElement.id") == "key"  # typing goes to the key at once
    page.keyboard.insert_text("not-the-key-0123456789")
    page.locator("#key-form button").click()
    assert page.evaluate("document.getElementById('key-form').hidden")
    assert label_of(trained_shapes[1] / "left" / "img_001.png") == "not classified"
    assert "401" in page.text_content(".result .error")
    assert not page.evaluate("document.getElementById('key-form').hidden")  # asked again
    assert "not accepted" in page.text_content("#key-note")
    assert page.evaluate("sessionStorage.getItem('cnnlab-api-key')") is None
    page.keyboard.insert_text(KEY)
    page.locator("#key-form button").click()
    assert label_of(trained_shapes[1] / "right" / "img_004.png") == "right"
    assert page.evaluate("sessionStorage.getItem('cnnlab-api-key')") == KEY
    page.goto(keyed.url + "/")  # the same tab later: not asked again
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
    assert page.evaluate("document.getElementById('key-form').hidden")
    assert label_of(trained_shapes[1] / "middle" / "img_006.png") == "middle"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command as README shows."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def test_https_with_a_self_signed_pair_and_a_key_file(trained_shapes, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    key_file = tmp_path / "api-key.txt"
    key_file.write_text(KEY + "\n")  # as `openssl rand -hex 32 > key.txt` writes it: with a newline
    key_file.chmod(0o600)
    server = start_server(
        trained_shapes[0],
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--api-key-file",
        str(key_file),
        "--batching",
        "off",
    )
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(cert))  # checks the chain and that it names 127.0.0.1
        status, health = request(server.url, path="/health", context=trusting)
        assert status == 200 and health["auth"]["api_key_required"] is True
        image = _image(trained_shapes, "right", 7)
        status, reply = post_images(server.url, [image], headers={"Authorization": f"Bearer {KEY}"}, context=trusting)
        assert status == 200 and reply["predictions"][0]["label"] == "right", reply
        status, _ = post_images(server.url, [image], context=trusting)
        assert status == 401
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the pair
            request(server.url, path="/health", context=ssl.create_default_context())
        plain = server.url.replace("https:", "http:")
        with pytest.raises(OSError):  # noqa: PT011  plain HTTP gets no answer from a TLS port, in whichever OSError
            request(plain, path="/health", timeout=10)
        assert f"API key required (from --api-key-file {key_file})" in server.output()
        assert "HTTPS" in server.output() and KEY not in server.output()
    finally:
        server.stop(wait=False)


SLOW_S, MAX_QUEUE, TIMEOUT_S, BURST = 1.0, 3, 2.5, 100


def test_a_burst_beyond_max_queue_gets_503_at_once_and_memory_stays_bounded(trained_shapes, tmp_path: Path) -> None:
    """100 clients at once, each with a ~750 KB image, against a model taking 1 s per call: one runs,
    three wait, the rest get 503 before their upload is read; waiting past the time limit is a 504."""
    import numpy as np
    from PIL import Image

    big = tmp_path / "noise.png"  # noise does not compress: a PNG as large as its pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)).save(big)
    body, kind = multipart([("noise.png", big.read_bytes())])
    assert len(body) > 700_000
    server = start_server(
        trained_shapes[0],
        "--batching",
        "off",
        "--max-queue",
        str(MAX_QUEUE),
        "--request-timeout",
        str(TIMEOUT_S),
        entry=[sys.executable, str(HERE / "slow_serve.py"), str(SLOW_S)],
    )
    try:
        process = psutil.Process(server.process.pid)
        assert post_images(server.url, [_image(trained_shapes)])[0] == 200  # warm: the first call's allocations
        before = process.memory_info().rss
        results: list[tuple[int, str | None, float, object]] = []
        start = threading.Barrier(BURST)

        def client() -> None:
            start.wait(timeout=30)
            sent = time.perf_counter()
            try:
                status, headers, reply = exchange(
                    server.url, "POST", "/predict", body, {"Content-Type": kind}, timeout=30
                )
            except OSError as exc:
                status, headers, reply = -1, {}, repr(exc)
            results.append((status, headers.get("retry-after"), time.perf_counter() - sent, reply))

        peak, burst_over = [before], threading.Event()

        def watch() -> None:  # the server's resident memory at its highest during the burst
            while not burst_over.wait(0.05):
                peak[0] = max(peak[0], process.memory_info().rss)

        clients = [threading.Thread(target=client) for _ in range(BURST)]
        watcher = threading.Thread(target=watch)
        watcher.start()
        began = time.perf_counter()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=60)
        took = time.perf_counter() - began
        burst_over.set()
        watcher.join()
        after = peak[0]
        status, health = request(server.url, path="/health")
        again = post_images(server.url, [_image(trained_shapes, "middle", 3)])[0]
    finally:
        server.stop(wait=False)
    statuses = [r[0] for r in results]
    busy = [r for r in results if r[0] == 503]
    late = [r for r in results if r[0] == 504]
    print(
        f"\nburst: {BURST} requests in {took:.2f} s: {statuses.count(200)} x 200, {len(busy)} x 503 (slowest "
        f"{max(r[2] for r in busy):.3f} s), {len(late)} x 504; resident {before / 2**20:.0f} MB, at most "
        f"{after / 2**20:.0f} MB during the burst; peak waiting {health['queue']['peak_waiting']}"
    )
    assert len(results) == BURST and set(statuses) <= {200, 503, 504}, [
        r for r in results if r[0] not in (200, 503, 504)
    ]
    assert len(busy) >= BURST - 2 * (MAX_QUEUE + 1), statuses  # at most a few runs' worth got in
    assert max(r[2] for r in busy) < SLOW_S, sorted(r[2] for r in busy)[-5:]  # refused without waiting for the model
    assert all(r[1] is not None and 1 <= int(r[1]) <= 60 for r in busy)
    assert all("--max-queue" in r[3]["detail"] for r in busy)
    assert statuses.count(200) >= 1 and late and all(TIMEOUT_S - 0.1 < r[2] < TIMEOUT_S + 2 for r in late)
    assert all("--request-timeout" in r[3]["detail"] for r in late)
    assert status == 200 and again == 200  # alive, and the queue empty again
    queue = health["queue"]
    assert queue["rejected_busy"] == len(busy) and queue["timed_out"] == len(late) and queue["waiting"] == 0
    assert queue["peak_waiting"] <= MAX_QUEUE and queue["max_queue"] == MAX_QUEUE
    # Every upload held at once (--max-queue 1000, a 50 ms model: all 100 answered in 5.9 s) took the
    # server from 610 to 730 MB; this queue holds at most MAX_QUEUE + 1 (measured: +16 MB).
    assert after - before < 40 * 2**20, (before, after)


def _make(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


ERRORS = [  # (case, CLI options, environment, API keywords, words of the one-line message)
    ("empty key file", ["--api-key-file", "{empty}"], {}, {"api_key_file": "{empty}"}, "is empty"),
    (
        "missing key file",
        ["--api-key-file", "{nothing}"],
        {},
        {"api_key_file": "{nothing}"},
        "cannot read --api-key-file",
    ),
    ("short key", ["--api-key-file", "{short}"], {}, {"api_key_file": "{short}"}, "under the 16"),
    ("key with a space", [], {"CNNLAB_API_KEY": "two words of a long key"}, {}, "spaces"),
    ("empty variable", [], {"CNNLAB_API_KEY": ""}, {}, "$CNNLAB_API_KEY is set but empty"),
    ("certificate alone", ["--ssl-certfile", "{cert}"], {}, {"ssl_certfile": "{cert}"}, "needs --ssl-keyfile"),
    ("key alone", ["--ssl-keyfile", "{cert}"], {}, {"ssl_keyfile": "{cert}"}, "needs --ssl-certfile"),
    (
        "unreadable key",
        ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{nothing}"],
        {},
        {"ssl_certfile": "{cert}", "ssl_keyfile": "{nothing}"},
        "cannot read --ssl-keyfile",
    ),
    (
        "not PEM",
        ["--ssl-certfile", "{short}", "--ssl-keyfile", "{short}"],
        {},
        {"ssl_certfile": "{short}", "ssl_keyfile": "{short}"},
        "must be PEM files",
    ),
    ("every origin", ["--cors-origin", "*"], {}, {"cors_origin": ["*"]}, "every web site"),
    ("not an origin", ["--cors-origin", "app.example.com"], {}, {"cors_origin": ["app.example.com"]}, "not an origin"),
    (
        "origin with a path",
        ["--cors-origin", "https://a.example/page"],
        {},
        {"cors_origin": "https://a.example/page"},
        "not an origin",
    ),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case, options, environ, keywords, words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_access_options_are_one_line_errors_before_the_model_loads(
    cli, trained_shapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case, options, environ, keywords, words
) -> None:
    files = {
        "empty": _make(tmp_path, "empty.txt", "\n"),
        "short": _make(tmp_path, "short.txt", "abc123\n"),
        "nothing": tmp_path / "nothing.pem",
        "cert": _make(tmp_path, "cert.pem", "-----BEGIN CERTIFICATE-----\n"),
    }
    fill = {name: str(path) for name, path in files.items()}
    monkeypatch.delenv("CNNLAB_API_KEY", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    started = time.perf_counter()
    code, out, err = cli("serve", trained_shapes[0], "--port", "0", *[o.format(**fill) for o in options])
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "serving" not in out and time.perf_counter() - started < 10  # refused before opening the model
    given = {
        k: (v.format(**fill) if isinstance(v, str) else [o.format(**fill) for o in v]) for k, v in keywords.items()
    }
    with pytest.raises(CnnlabError) as raised:
        cnnlab.serve(trained_shapes[0], port=0, **given)
    assert err.strip() == f"cnnlab serve: error: {raised.value}"  # the API says exactly what the CLI says


def test_the_api_checks_what_the_cli_checks() -> None:
    for keywords, words in [
        ({"max_queue": 0}, "--max-queue"),
        ({"request_timeout": 0}, "--request-timeout"),
        ({"max_files": 0}, "--max-files"),
        ({"batching": "maybe"}, "batching must be one of"),
    ]:
        with pytest.raises(CnnlabError, match=re.escape(words)):
            cnnlab.serve("no-such-run", **keywords)


def test_start_up_warnings_name_the_risk(tmp_path: Path) -> None:
    assert exposure_warnings(ServeSettings()) == []  # loopback: nothing to warn about
    open_to_all = exposure_warnings(ServeSettings(host="0.0.0.0"))
    assert len(open_to_all) == 1 and "without an API key" in open_to_all[0] and "anyone" in open_to_all[0]
    plain = exposure_warnings(ServeSettings(host="0.0.0.0", api_key=KEY))
    assert len(plain) == 1 and "unencrypted" in plain[0] and "--ssl-certfile" in plain[0]
    with_tls = ServeSettings(host="0.0.0.0", api_key=KEY, ssl_certfile="c.pem", ssl_keyfile="k.pem")
    assert exposure_warnings(with_tls) == []
    assert KEY not in repr(ServeSettings(api_key=KEY))
    shared = _make(tmp_path, "key.txt", KEY, 0o644)
    assert "chmod 600" in str(key_file_warning(shared))
    assert key_file_warning(_make(tmp_path, "own.txt", KEY, 0o600)) is None
    assert ServeSettings(cors_origins=("HTTPS://App.Example.com:443/", "http://localhost:5173")).cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
    )
    assert os.environ.get("CNNLAB_API_KEY") != KEY
