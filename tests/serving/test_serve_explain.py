"""Grad-CAM over HTTP explains the class shown beside it: the served runtime's answer, said with the
runtime and the model the map was computed on, also when an INT8 model disagrees with its checkpoint."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from servers import Server, post_images, request, start_server

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def int8_server(trained_shapes, tmp_path_factory) -> Server:
    """The shapes run with model.int8.onnx, served with --runtime int8 by a runtime answering the next class."""
    import torch

    from cnnlab.cli.main import main

    run = Path(shutil.copytree(trained_shapes[0], tmp_path_factory.mktemp("int8") / "base"))
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["quantize", str(run), "--calibration", "8"]) == 0
    finally:
        torch.set_num_threads(saved)
    running = start_server(
        run, "--runtime", "int8", "--threads", "1", entry=[sys.executable, str(HERE / "flipped_serve.py")]
    )
    yield running
    running.stop(wait=False)


def test_the_map_is_for_the_class_the_int8_runtime_answered_and_says_so(int8_server: Server, trained_shapes) -> None:
    image = ("right.png", (trained_shapes[1] / "right" / "img_004.png").read_bytes())
    status, predicted = post_images(int8_server.url, [image])
    assert status == 200 and predicted["runtime"] == "int8" and predicted["runtime_name"] == "ONNX Runtime INT8"
    shown = predicted["predictions"][0]
    status, explained = post_images(int8_server.url, [image], "/explain")
    assert status == 200, explained
    assert explained["label"] == shown["label"]  # the map explains the class shown beside it...
    assert explained["probability"] == pytest.approx(shown["probability"], abs=1e-5)
    assert explained["runtime"] == "int8" and explained["computed_on"] == "pytorch"
    caption = explained["caption"]
    assert f"'{shown['label']}'" in caption and "ONNX Runtime INT8 answered" in caption and "checkpoint" in caption
    own = explained["checkpoint"]["label"]  # ...not the checkpoint's own top class, which the note names
    assert own != shown["label"] and own == "right"
    assert f"The checkpoint's own top class is '{own}'" in explained["note"]
    _, health = request(int8_server.url, path="/health")
    assert health["runtime"] == "int8" and health["why"] == "asked for with --runtime"


def test_the_page_shows_the_runtime_and_captions_the_map_with_its_class(
    int8_server: Server, trained_shapes, page: Page
) -> None:
    page.goto(int8_server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
    page.set_input_files("#file", trained_shapes[1] / "right" / "img_004.png")
    label = page.locator(".result .label:not(.pending)")
    expect(label).not_to_have_text("…")
    shown = label.text_content()
    expect(page.locator(".result .runtime")).to_have_text("by ONNX Runtime INT8")
    page.locator(".result button").click()
    expect(page.locator(".cam-caption")).to_contain_text(f"Grad-CAM map for '{shown}'")
    expect(page.locator(".cam-caption")).to_contain_text("ONNX Runtime INT8 answered")
    expect(page.locator(".cam-scale")).to_contain_text(f"high evidence for {shown}")
    expect(page.locator(".cam-note")).to_contain_text("The checkpoint's own top class is 'right'")
    assert shown in page.get_attribute("img.cam", "alt")
