"""EMA of the weights (--ema): the average is what training leaves in the model, and it learns;
fast_cifar validates with two views while fitting and tests with six."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.training.averaging import EMAWeights, ema_decay, weight_averaging


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _ManualEMA(L.Callback):
    """The same average, by hand, from the weights after each step."""

    def __init__(self, decay: float) -> None:
        self.decay, self.steps, self.average = decay, 0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weights = [p.detach().clone() for p in pl_module.parameters()]
        if self.average is None:
            self.average = weights
        else:
            keep = ema_decay(self.decay, self.steps)
            self.average = [keep * a + (1 - keep) * w for a, w in zip(self.average, weights)]
        self.steps += 1


def test_ema_decay_warms_up_then_holds() -> None:
    assert ema_decay(0.99, 0) == 0.1 and ema_decay(0.99, 10) == 11 / 20 and ema_decay(0.99, 10_000) == 0.99
    assert weight_averaging(TrainConfig()) == [] and isinstance(weight_averaging(TrainConfig(ema=0.9))[0], EMAWeights)


def test_training_ends_with_the_averaged_weights_and_they_classify(one_torch_thread) -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    module, manual = _Tiny(), _ManualEMA(0.9)
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[EMAWeights(0.9), manual],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    for kept, expected in zip(module.parameters(), manual.average):
        assert torch.allclose(kept, expected, atol=1e-5)
    module.eval()
    with torch.no_grad():
        assert (module.net(x).argmax(1) == y).float().mean() > 0.9  # chance is 0.5


def test_validation_while_fitting_uses_the_cheaper_tta_and_test_the_full_one() -> None:
    from types import SimpleNamespace

    from cnnlab.models.fast_cnn import FastCifarNet
    from cnnlab.training.callbacks import CheapValidationTTA

    module = SimpleNamespace(model=FastCifarNet(10, 3, (16, 16), widths=(8, 8, 8), tta="flip-translate"))
    callback = CheapValidationTTA()
    callback.on_fit_start(None, module)
    assert module.model.tta == "flip"
    callback.on_fit_end(None, module)
    assert module.model.tta == "flip-translate"
    plain = SimpleNamespace(model=nn.Linear(2, 2))  # a network without TTA is left alone
    callback.on_fit_start(None, plain), callback.on_fit_end(None, plain)
