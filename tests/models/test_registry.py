"""Model registry: every model builds, runs, keeps one module per activation site, and loads checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from smpq.cost import cost_table
from smpq.errors import ArtifactError
from smpq.models import CompactResNet, create_model, list_models, register_model

INPUT_SIZE = {"compact_resnet": 28, "resnet20": 32, "resnet18": 64, "mobilenet_v2": 64}


def test_all_expected_models_are_registered() -> None:
    assert set(INPUT_SIZE) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(INPUT_SIZE))
@pytest.mark.parametrize(("num_classes", "in_channels"), [(10, 1), (7, 3)])
def test_builds_and_returns_logits(name: str, num_classes: int, in_channels: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_channels).eval()
    size = INPUT_SIZE[name]
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(INPUT_SIZE))
def test_every_activation_and_layer_is_its_own_module_called_once(name: str) -> None:
    """Quantizers hook module inputs: no ReLU may serve two places, and no op may run in place."""
    model = create_model(name, 10, 3).eval()
    calls: dict[nn.Module, int] = {}
    watched = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Conv2d, nn.Linear))]
    for module in watched:
        module.register_forward_hook(lambda mod, inp, out: calls.__setitem__(mod, calls.get(mod, 0) + 1))
    size = INPUT_SIZE[name]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert all(calls.get(module) == 1 for module in watched), "a module ran more than once or never"
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_compact_resnet_default_design() -> None:
    table = cost_table(create_model("compact_resnet", 10, 1), (1, 28, 28))
    assert table.total_macs == 2_552_000
    assert table.first == "stem.0" and table.last == "fc"
    assert len(table.searchable) == 8


def test_compact_resnet_widths_scale() -> None:
    model = create_model("compact_resnet", 10, 1, widths=(8, 16, 32, 64))
    assert isinstance(model, CompactResNet) and model.fc.in_features == 64
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="equally long"):
        CompactResNet(widths=(16, 32), strides=(1, 2, 2))


def test_resnet20_layers() -> None:
    table = cost_table(create_model("resnet20", 10, 3), (3, 32, 32))
    assert len(table.layers) == 22  # stem + 18 block convs + 2 option-B shortcuts + fc
    assert sum(".shortcut." in name for name in table.names) == 2


def test_resnet18_keys_match_torchvision() -> None:
    """An ImageNet checkpoint saved from torchvision loads into the registry's resnet18 unchanged."""
    ours = create_model("resnet18", 1000, 3).state_dict()
    theirs = torchvision.models.resnet18(weights=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_first_conv_adapted_to_in_channels() -> None:
    assert create_model("resnet18", 10, 1).conv1.in_channels == 1
    assert create_model("mobilenet_v2", 10, 4).features[0][0].in_channels == 4


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = create_model("compact_resnet", 10, 1).state_dict()
    torch.manual_seed(3)
    b = create_model("compact_resnet", 10, 1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_registered_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet999'") as err:
        create_model("resnet999", 10, 3)
    assert all(name in str(err.value) for name in INPUT_SIZE)


def test_duplicate_registration_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20")(lambda num_classes, in_channels: nn.Identity())


def test_pretrained_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_model("compact_resnet", 10, 1)
    source.train()
    source(torch.randn(8, 1, 28, 28))  # move the batch-norm running statistics off their defaults
    path = tmp_path / "fp.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model("compact_resnet", 10, 1, pretrained=path)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), loaded.eval()(x))


def test_pretrained_missing_file(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        create_model("resnet20", 10, 3, pretrained=tmp_path / "nope.pt")


def test_pretrained_corrupt_file(tmp_path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes())
    with pytest.raises(ArtifactError) as err:
        create_model("compact_resnet", 10, 1, pretrained=path)
    assert str(err.value) == (f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); restore it "
                              "or rerun the stage that writes it")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["zip", "raw_pickle"])
def test_a_checkpoint_that_needs_pickle_is_refused_without_pickle_advice(tmp_path, capsys, kind) -> None:
    import pickle

    path = tmp_path / "payload.pt"
    if kind == "zip":
        torch.save({"fc.weight": _Payload()}, path)
    else:
        path.write_bytes(pickle.dumps({"fc.weight": _Payload()}, protocol=2))
    with pytest.raises(ArtifactError) as err:
        create_model("compact_resnet", 10, 1, pretrained=path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a plain tensor checkpoint (it needs ")
    assert message.endswith("); do not load it with pickle, which can run code hidden in the file; save its "
                            "state_dict (tensors only) from a trusted copy")
    assert "weights_only" not in message and "\n" not in message
    assert "never run" not in capsys.readouterr().out


def test_truncated_and_empty_checkpoints_say_what_is_wrong(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save(create_model("compact_resnet", 10, 1).state_dict(), good)
    truncated, empty = tmp_path / "truncated.pt", tmp_path / "empty.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError) as err:
        create_model("compact_resnet", 10, 1, pretrained=truncated)
    assert str(err.value) == (f"{truncated}: not a PyTorch checkpoint (a damaged or truncated zip archive); restore "
                              "it or rerun the stage that writes it")
    with pytest.raises(ArtifactError, match=r"empty\.pt: empty file, not a checkpoint; restore it or rerun"):
        create_model("compact_resnet", 10, 1, pretrained=empty)


def test_pretrained_shape_mismatch_names_key_and_shapes(tmp_path) -> None:
    path = tmp_path / "ten.pt"
    torch.save(create_model("compact_resnet", 10, 1).state_dict(), path)
    with pytest.raises(ArtifactError) as err:
        create_model("compact_resnet", 100, 1, pretrained=path)
    message = str(err.value)
    assert str(path) in message
    assert "shape mismatch for fc.weight: file (10, 64) vs model (100, 64)" in message
    assert "fc.bias" in message


def test_pretrained_key_mismatch_lists_missing_and_unexpected(tmp_path) -> None:
    path = tmp_path / "resnet20.pt"
    torch.save(create_model("resnet20", 10, 1).state_dict(), path)
    with pytest.raises(ArtifactError) as err:
        create_model("compact_resnet", 10, 1, pretrained=path)
    message = str(err.value)
    assert "missing: ['blocks.0.conv1.weight'" in message
    assert "unexpected: ['layer1.0.conv1.weight'" in message
    assert "more)" in message  # long key lists are cut


def test_pretrained_non_tensor_value(tmp_path) -> None:
    state = create_model("compact_resnet", 10, 1).state_dict()
    state["fc.bias"] = [0.0] * 10
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(ArtifactError, match="fc.bias is a list, not a tensor"):
        create_model("compact_resnet", 10, 1, pretrained=path)
