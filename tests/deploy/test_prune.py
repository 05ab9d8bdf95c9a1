"""``cnnlab prune``: structured pruning really shrinks the network; the pruned run reopens without pickle."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import unnamed_run_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: no OpenMP spin-waits


def test_structured_pruning_makes_a_smaller_run_every_command_takes(cli, run_copy, trained_shapes) -> None:
    code, out, err = cli("prune", run_copy, "--sparsity", "0.5", "--finetune-epochs", "1", "--format", "json")
    assert code == 0, err
    table = json.loads(out)  # training's progress went to stderr
    data = table["data"]
    assert data["achieved"] == pytest.approx(0.5, abs=0.02)  # half of every hidden layer's channels
    pruned = run_copy / "pruned" / "structured-50"
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    before, after = load_trained(RunFiles(run_copy)).model, load_trained(RunFiles(pruned)).model
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(after) < 0.35 * count(before)  # in and out channels both halve
    x = torch.rand(4, 3, 20, 20)
    assert after(x).shape == before(x).shape == (4, 3)
    # The files hold plain tensors: no unpickling needed, and a pickle-only loader is not involved.
    torch.load(pruned / "checkpoints" / "best.ckpt", weights_only=True)
    from safetensors.torch import load_file

    assert load_file(str(pruned / "pruned.safetensors"))["features.0.weight"].shape[0] == 16
    assert json.loads((pruned / "architecture.json").read_text())["resized"]["features.0"] == {"out_channels": 16}
    for command in (["evaluate", pruned], ["predict", pruned, trained_shapes[1] / "left" / "img_000.png"],
                    ["export", pruned, "--format", "torchscript"]):
        code, out, err = cli(*command)
        assert code == 0, (command, err)
    assert not unnamed_run_files(run_copy) and not unnamed_run_files(pruned)


def test_unstructured_pruning_reaches_the_sparsity_and_fine_tuning_keeps_it(cli, run_copy) -> None:
    code, _, err = cli("prune", run_copy, "--sparsity", "0.7", "--unstructured", "--finetune-epochs", "1")
    assert code == 0, err
    from cnnlab.deploy.pruning import weight_sparsity
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    model = load_trained(RunFiles(run_copy / "pruned" / "unstructured-70")).model
    assert weight_sparsity(model) == pytest.approx(0.7, abs=0.005)
    assert not (run_copy / "pruned" / "unstructured-70" / "architecture.json").exists()  # same shapes


@pytest.mark.parametrize("sparsity", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_zero_one_is_refused(cli, run_copy, sparsity) -> None:
    code, _, err = cli("prune", run_copy, "--sparsity", sparsity)
    assert code == 2 and "--sparsity must be between 0 and 1" in err and err.count("\n") == 1
    assert not (run_copy / "pruned").exists()
