"""Which model a mistyped name suggests, and what ``cnnlab models list`` shows for a name."""

from __future__ import annotations

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.models.catalog import catalog
from cnnlab.models.lite0_offline import lite0_available
from cnnlab.models.registry import resolve_name


def test_a_name_cut_short_suggests_the_one_with_built_in_weights_first() -> None:
    with pytest.raises(CnnlabError) as caught:
        resolve_name("efficientnet_lite")
    message = str(caught.value)
    assert "did you mean efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2?" in message, message


def test_a_lesson_name_mistyped_suggests_the_lesson_names_first() -> None:
    with pytest.raises(CnnlabError, match=r"did you mean resnet50, "):
        resolve_name("resnet5")
    with pytest.raises(CnnlabError, match=r"unknown model 'qqqqqqq'; see 'cnnlab models list'"):
        resolve_name("qqqqqqq")


def test_models_list_shows_a_name_once_with_the_weights_that_name_gets() -> None:
    rows, _ = catalog(False, "lite0", 50)
    names = [row[0] for row in rows]
    assert names.count("efficientnet_lite0") == 1, names  # timm's own efficientnet_lite0 is not the model it gives
    lite0 = next(row for row in rows if row[0] == "efficientnet_lite0")
    assert lite0[1] == "tf_efficientnet_lite0.in1k"
    if lite0_available():
        assert lite0[4] == "built-in"
    assert "vgg16" not in names and "simple_cnn" not in names  # the filter applies to every kind of name


def test_models_list_groups_the_names_of_one_model() -> None:
    rows, _ = catalog(True, "mobilenetv2_100", 0)
    assert [row[0] for row in rows] == ["mobilenetv2, mobilenet_v2"]
