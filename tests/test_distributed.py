"""The data-parallel training loop itself (smpq.distributed, smpq.train) on 2 gloo processes: a small CNN with
batch norm, trained with the same global batches, ends within float32 rounding of the 1-process run; the
sharded loader yields exactly the single-process batches split by rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from smpq.data import TensorImages, make_loader
from smpq.device import Execution
from smpq.distributed import synchronise_batchnorm
from smpq.train import fit

GLOBAL_BATCH, SAMPLES = 32, 112  # the last batch has 16 examples: shards of 8
TOLERANCE = 1e-4


def images() -> TensorImages:
    generator = torch.Generator().manual_seed(0)
    return TensorImages(torch.randint(0, 256, (SAMPLES, 1, 8, 8), dtype=torch.uint8, generator=generator),
                        torch.arange(SAMPLES) % 10)


def loader(shard=(0, 1)):
    return make_loader(images(), batch_size=GLOBAL_BATCH, mean=[127.5], std=[64.0], shuffle=True, seed=1,
                       augment=True, shard=shard)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))


def train_state(rank: int, world: int, init: str | None) -> dict:
    """2 epochs of SGD on ``rank``'s shard; the process group exists when ``world`` > 1."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = small_cnn()
    if world > 1:
        synchronise_batchnorm(model)
    fit(model, loader((rank, world)), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), epochs=2,
        execution=Execution(rank=rank, world_size=world), progress=False, eval_loader=loader((rank, world)))
    if world > 1:
        dist.destroy_process_group()
    return model.state_dict()


def _worker(rank: int, world: int, init: str, out: str) -> None:
    state = train_state(rank, world, init)
    torch.save(state, f"{out}.{rank}")


def test_sharded_loader_splits_each_global_batch_by_rank():
    full, shards = loader(), [loader((r, 2)) for r in (0, 1)]
    for epoch in (0, 1):
        for each in (full, *shards):
            each.set_epoch(epoch)
        for (x, y), (x0, y0), (x1, y1) in zip(full, *shards, strict=True):
            assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
            assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_two_gloo_processes_train_like_one(tmp_path):
    """Within ``TOLERANCE`` (absolute): float32 summation order only, amplified over the 8 steps; both ranks
    end with identical weights, and training did move them."""
    one = train_state(0, 1, None)
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}") for r in (0, 1)]
    for key, value in one.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        gap = float((value.double() - ranks[0][key].double()).abs().max())
        assert gap <= TOLERANCE, (key, gap)
    assert not torch.equal(one["0.weight"], small_cnn().state_dict()["0.weight"])  # training moved it


def test_sharded_activation_quantizer_scales_the_step_gradient_by_the_global_batch():
    """Two shards with ``batch_shards=2``: their step gradients sum to the whole batch's in one process."""
    from smpq.distributed import shard_batches
    from smpq.quant import LSQQuantizer

    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    whole, sharded = LSQQuantizer(4, signed=True), shard_batches(nn.Sequential(LSQQuantizer(4, signed=True)), 2)[0]
    whole(x).sum().backward()
    for part in x.chunk(2):
        sharded(part).sum().backward()
    assert sharded.batch_shards == 2
    assert torch.allclose(whole.step.grad, sharded.step.grad, rtol=1e-6, atol=0)


def test_relaunch_only_outside_torchrun_and_with_several_processes():
    from smpq.config import RuntimeConfig
    from stages.launch import relaunch, torchrun_command

    assert relaunch("stages.finetune", RuntimeConfig(processes=1), [], {}) is None
    assert relaunch("stages.finetune", RuntimeConfig(processes=2), [], {"LOCAL_RANK": "0"}) is None
    command = torchrun_command("stages.finetune", 2, ["--params", "p.yaml"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "stages.finetune", "--params", "p.yaml"]
