"""The shared training loop: learns, reports through the callback, is deterministic, stops on NaN."""

import pytest
import torch
from torch import nn

from smpq.config import TrainConfig
from smpq.errors import TrainingDiverged
from smpq.train import evaluate, fit, iterate_forever, make_scheduler, train


def blobs(seed: int = 0, n: int = 256):
    """Two well-separated Gaussian blobs in 4-D, as 8 batches of 32."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) + 3.0 * labels[:, None].float()
    return [(x[i:i + 32], labels[i:i + 32]) for i in range(0, n, 32)]


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


CFG = TrainConfig(epochs=3, lr=0.1, schedule="constant")


def test_train_learns_and_reports_each_epoch():
    seen = []
    net = model()
    before = evaluate(net, blobs(1))
    history = train(net, blobs(), CFG, eval_loader=blobs(1), on_epoch=lambda e, m: seen.append((e, m)),
                    progress=False)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_top1"] > 0.95
    assert history[-1]["val_loss"] < before["loss"] / 2
    assert set(history[0]) >= {"train_loss", "train_top1", "lr", "epoch_seconds", "val_loss", "val_top1", "epoch"}


def test_same_seed_same_weights():
    a, b = model(), model()
    train(a, blobs(), CFG, progress=False)
    train(b, blobs(), CFG, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_non_finite_loss_stops_with_clear_error():
    bad = blobs()
    bad[2] = (torch.full_like(bad[2][0], float("nan")), bad[2][1])
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step 2; lower the learning rate"):
        train(model(), bad, CFG, progress=False)


def test_before_step_runs_before_every_weight_step():
    steps = []
    net = model()
    fit(net, blobs(), torch.optim.SGD(net.parameters(), lr=0.1), epochs=2, before_step=steps.append, progress=False)
    assert steps == list(range(16))


def test_evaluate_counts_exact_accuracy():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert evaluate(net, [(x, y)])["top1"] == pytest.approx(0.75)


def test_schedules_and_epoch_hook():
    class Loader(list):
        epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    loader = Loader(blobs())
    for schedule in ("onecycle", "cosine"):
        history = train(model(), loader, TrainConfig(epochs=2, lr=0.1, schedule=schedule), progress=False)
        assert history[-1]["lr"] < 0.01  # both anneal towards zero by the end
    assert Loader.epochs == [0, 1, 0, 1]
    batches = iterate_forever(loader)
    assert len([next(batches) for _ in range(20)]) == 20


def test_without_a_terminal_each_tenth_of_an_epoch_logs_progress_and_feeds_the_step_curve(caplog):
    """Under ``dvc repro`` stderr is no terminal: a line per 10 % naming the stage and method, with rate and ETA."""
    steps = []
    loader = blobs(n=640)  # 20 steps per epoch
    with caplog.at_level("INFO", logger="smpq.progress"):
        train(model(), loader, TrainConfig(epochs=2, lr=0.1, schedule="constant"), desc="finetune smpq",
              on_step=lambda step, m: steps.append((step, m)))
    lines = [r.getMessage() for r in caplog.records if r.name == "smpq.progress"]
    assert len(lines) == 20 and lines[0].startswith("finetune smpq epoch 1/2:  10% (2/20 steps)")
    assert all("steps/s" in line and "ETA " in line for line in lines)
    assert [s for s, _ in steps] == list(range(2, 41, 2))
    assert [m["epoch"] for _, m in steps][:3] == [0.1, 0.2, 0.3] and steps[-1][1]["epoch"] == 2.0
    assert steps[-1][1]["train_loss"] < steps[0][1]["train_loss"]  # the window's loss, not the running mean


def test_progress_marks_cover_short_loops():
    from smpq.progress import Progress

    bar = Progress(3, "shapley owen", unit="unit", bar=False)
    assert [bar.update() for _ in range(3)] == [True, True, True] and bar.marks == [1, 2, 3]
    assert "100% (3/3 units)" in bar.line()


@pytest.mark.parametrize("steps", range(1, 9))
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_every_schedule_runs_any_positive_number_of_steps(schedule, steps):
    """Short runs (e.g. 512 samples in batches of 128 = 4 steps) train to the end with finite, positive lrs
    that peak at ``lr`` (one-cycle and constant) and never exceed it (pretrain, finetune and the supernet
    share this loop; the supernet's cosine schedule is the ``cosine`` case)."""
    net, lrs = model(), []
    cfg = TrainConfig(epochs=1, lr=0.1, schedule=schedule)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, steps)
    fit(net, blobs(n=32 * steps), optimizer, epochs=1, scheduler=scheduler, progress=False,
        before_step=lambda step: lrs.append(optimizer.param_groups[0]["lr"]))
    assert len(lrs) == steps
    assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
    if schedule != "cosine":
        assert max(lrs) == pytest.approx(0.1)
    history = train(model(), blobs(n=32 * steps), cfg, progress=False)
    assert len(history) == 1 and history[0]["lr"] >= 0
