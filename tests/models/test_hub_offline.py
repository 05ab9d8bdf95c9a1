"""Without a network, asking for hub weights fails at once with a message naming --weights."""

from __future__ import annotations

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, weights as weights_module


def test_hub_weights_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(weights_module, "_hub_reachable", lambda *a, **k: False)  # no DNS lookup
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing downloaded before
    with pytest.raises(CnnlabError) as error:
        create_model("resnet18", num_classes=2, in_chans=3, image_size=(64, 64), pretrained=True)
    message = str(error.value)
    assert "--weights FILE" in message and "efficientnet_lite0" in message
    assert "\n" not in message
