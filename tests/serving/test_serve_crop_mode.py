"""A --crop-mode squash run served and exported: uploads and the ONNX file's inputs are squashed as in training."""

from __future__ import annotations

import json
from pathlib import Path

from servers import post_images, start_server

from conftest import train_squash_bars


def _top(out: str) -> dict[str, float]:
    return {row["class"]: row["probability"] for row in json.loads(out)[0]["top"]}


def test_a_squash_run_serves_and_exports_squashing(tmp_path: Path, cli, one_torch_thread) -> None:
    run, folder = train_squash_bars(cli, tmp_path)
    runs = run.parent
    image = next(folder.glob("right/*.png"))
    code, out, err = cli("predict", runs / "sq", image, "--format", "json", "--top-k", "3")
    assert code == 0, err
    expected = _top(out)  # the checkpoint on the squashed photo (tests/data/test_crop_mode.py checks that)
    code, _, err = cli("export", runs / "sq")
    assert code == 0, err
    import onnxruntime

    meta = onnxruntime.InferenceSession(str(runs / "sq" / "model.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(meta["cnnlab"])["preprocess"]["crop_mode"] == "squash"  # the file carries its crop mode
    code, out, err = cli("predict", runs / "sq" / "model.onnx", image, "--format", "json", "--top-k", "3")
    assert code == 0, err
    assert all(abs(p - expected[name]) < 1e-4 for name, p in _top(out).items())
    server = start_server(runs / "sq", "--runtime", "pytorch")
    try:
        status, body = post_images(server.url, [(image.name, image.read_bytes())], "/predict?k=3")
    finally:
        server.stop()
    assert status == 200, body
    served = {row["class"]: row["probability"] for row in body["predictions"][0]["top"]}
    assert all(abs(p - expected[name]) < 1e-5 for name, p in served.items())
