"""--weights FILE: both formats, across head designs, mismatches, malicious pickles; models list."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.heads import HeadedModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _make(path: Path | None = None, head: str = "default", num_classes: int = 3, name: str = "resnet18"):
    return create_model(
        name, num_classes=num_classes, in_chans=3, image_size=(32, 32), weights=str(path) if path else None, head=head
    )


def _source(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False, num_classes=5)  # another classifier size


def _same_backbone(model: torch.nn.Module, source: torch.nn.Module) -> bool:
    own = (model.backbone if isinstance(model, HeadedModel) else model).state_dict()
    return all(torch.equal(own[k], v) for k, v in source.state_dict().items() if not k.startswith("fc."))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("head", ["default", "lesson"])
def test_local_weights_both_formats_with_any_head(tmp_path: Path, suffix: str, head: str, caplog) -> None:
    source = _source()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        model = _make(path, head)
    assert _same_backbone(model, source)
    assert "fc.weight" in caplog.text and "starts fresh" in caplog.text  # classifier dropped, reported
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_custom_head_file_loads_into_same_head_and_into_default(tmp_path: Path) -> None:
    trained = _make(head="lesson")
    with torch.no_grad():
        trained.head[0].weight.add_(1.0)
    path = tmp_path / "lesson.pth"
    torch.save(trained.state_dict(), path)
    again = _make(path, head="lesson")  # same design and size: the head is kept too
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), trained.state_dict().values()))
    plain = _make(path)  # a default-head model takes the backbone only
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in trained.backbone.state_dict().items())


def test_mismatched_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=3).state_dict(), str(path))
    with pytest.raises(CnnlabError) as info:
        _make(path)
    message = str(info.value)
    assert "does not fit this model" in message and "another architecture" in message and "\n" not in message


class _Evil:
    """Unpickling this runs a shell command (here: creating a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CnnlabError, match="pickled Python objects"):
        _make(path)
    assert not marker.exists()


def test_models_list_command(capsys) -> None:
    from cnnlab.cli import models_cmd
    from cnnlab.cli.parser import Parser

    parser = Parser(prog="cnnlab")
    models_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "list", "--filter", "resnet1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for text in ("resnet18", "resnet18.tv_in1k", "11.7M", "resnet101"):
        assert text in out, text
    # --filter filters the own CNNs and the lesson's names too, not only timm's
    assert "simple_cnn" not in out and "efficientnet_lite0" not in out and "vgg16" not in out
