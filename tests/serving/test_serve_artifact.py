"""``cnnlab serve model.onnx``: an exported artifact alone, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from servers import post_images, request, start_server


def test_an_artifact_serves_alone_and_sigterm_lets_requests_in_flight_finish(
    cli, run_copy: Path, trained_shapes
) -> None:
    code, _, err = cli("export", run_copy)
    assert code == 0, err
    artifact = run_copy / "model.onnx"
    image = trained_shapes[1] / "middle" / "img_002.png"
    code, out, err = cli("predict", artifact, image, "--format", "json")
    assert code == 0, err
    expected = json.loads(out)[0]["top"]
    # A long batching window keeps the requests in flight when the signal arrives.
    server = start_server(artifact, "--batch-window-ms", "1500", "--max-batch", "64", "--batching", "on")
    try:
        status, health = request(server.url, path="/health")
        assert status == 200 and health["runtime"] == "onnx" and health["gradcam"] is False
        status, reply = post_images(server.url, [("a.png", image.read_bytes())], "/explain")
        assert status == 404 and "checkpoint" in reply["detail"]
        replies: list[tuple[int, object]] = []

        def client() -> None:
            replies.append(post_images(server.url, [(image.name, image.read_bytes())], "/predict?k=3"))

        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        time.sleep(0.5)  # the requests are queued, waiting for the window to close
        server.process.send_signal(signal.SIGTERM)
        for thread in clients:
            thread.join(timeout=60)
        code, output = server.wait(timeout=60)
    finally:
        server.stop(signal.SIGKILL, wait=False)
    assert [status for status, _ in replies] == [200] * 6, replies
    for _, body in replies:
        top = body["predictions"][0]["top"]
        assert [t["class"] for t in top] == [t["class"] for t in expected]
        assert abs(top[0]["probability"] - expected[0]["probability"]) < 1e-5
    assert all(body["batch_images"] == 6 for _, body in replies)  # one batch of all six
    assert code == 0 and output.rstrip().endswith("stopped"), output
