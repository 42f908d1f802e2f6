"""params.yaml -> typed config: every bad input is rejected with the key path and what is allowed."""

import inspect
from pathlib import Path

import pytest
import yaml

from smpq.config import STEP_GRADS, Params, as_flat_dict, load_params
from smpq.errors import ConfigError
from smpq.quant.lsq import WEIGHT_STEP_GRADS
from smpq.shapley.estimate import make_sampler, shapley_values

PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path, changes) -> Path:
    """The project's params.yaml with ``changes`` merged into its sections."""
    data = yaml.safe_load(PROJECT_PARAMS.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_project_params_load_and_are_frozen():
    params = load_params(PROJECT_PARAMS)
    assert isinstance(params, Params)
    assert params.quant.w_bits == (2, 3, 4, 8)
    with pytest.raises(AttributeError):
        params.pretrain.epochs = 5  # frozen


def test_shapley_method_is_the_estimators_keyword_arguments(tmp_path):
    params = load_params(write(tmp_path, {}), {"shapley.truncation": 0.25, "shapley.antithetic": False,
                                               "shapley.estimator": "permutation", "shapley.value": "top1"})
    assert params.shapley.method == {"estimator": "permutation", "antithetic": False, "direction": "remove",
                                     "truncation": 0.25}
    assert set(params.shapley.method) <= set(inspect.signature(make_sampler).parameters)
    assert set(params.shapley.method) <= set(inspect.signature(shapley_values).parameters)


def test_every_key_must_be_set(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="data: missing key; every key must be set"):
        load_params(path)
    data = yaml.safe_load(PROJECT_PARAMS.read_text())
    del data["pretrain"]["lr"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"pretrain.lr: missing key.*needs: epochs, batch_size, lr"):
        load_params(path)


def test_overrides_use_dotted_keys(tmp_path):
    params = load_params(write(tmp_path, {}), {"finetune.epochs": 7,
                                               "select.budget": {"gbitops": 1.5, "avg_bits": None, "size_mb": None}})
    assert params.finetune.epochs == 7
    assert params.select.budget.gbitops == 1.5 and params.select.budget.avg_bits is None


@pytest.mark.parametrize("data, message", [
    ({"pretrain": {"epoch": 3}}, "pretrain.epoch: unknown key; allowed keys: epochs, batch_size"),
    ({"colour": 1}, "colour: unknown key; allowed keys: seed, data"),
    ({"pretrain": {"epochs": "three"}}, "pretrain.epochs: expected an integer, got 'three'"),
    ({"pretrain": {"epochs": 2.5}}, "pretrain.epochs: expected an integer, got 2.5"),
    ({"pretrain": {"epochs": True}}, "pretrain.epochs: expected an integer, got True"),
    ({"pretrain": {"epochs": -1}}, "pretrain.epochs: -1 out of range; allowed: >= 0"),
    ({"pretrain": {"momentum": 1.5}}, "pretrain.momentum: 1.5 out of range; allowed: [0.0, 1.0]"),
    ({"pretrain": {"lr": "fast"}}, "pretrain.lr: expected a number, got 'fast'"),
    ({"pretrain": {"nesterov": "yes"}}, "pretrain.nesterov: expected true or false, got 'yes'"),
    ({"finetune": {"eval_batch_size": 0}}, "finetune.eval_batch_size: 0 out of range; allowed: >= 1"),
    ({"finetune": {"weight_step_grad": "layer"}},
     "finetune.weight_step_grad: 'layer' is not allowed; allowed: channel, tensor"),
    ({"pretrain": {"schedule": "step"}}, "pretrain.schedule: 'step' is not allowed; allowed: onecycle, cosine, constant"),
    ({"data": {"dataset": "mnist"}}, "data.dataset: 'mnist' is not allowed; allowed: fashion_mnist, cifar10, image_folder"),
    ({"data": {"dataset": "cifar10"}}, "data.root: required for dataset 'cifar10'"),
    ({"data": {"dataset": "image_folder", "root": "/x"}}, "data.image_size: required when dataset is image_folder"),
    ({"quant": {"w_bits": []}}, "quant.w_bits: the candidate list is empty; give bit-widths in [2, 16]"),
    ({"quant": {"a_bits": [2, 40]}}, "quant.a_bits: [40] out of range; allowed bit-widths: integers in [2, 16]"),
    ({"quant": {"a_bits": [4, 4]}}, "quant.a_bits: duplicate candidates in [4, 4]"),
    ({"quant": {"w_bits": 4}}, "quant.w_bits: expected a list, got 4"),
    ({"quant": {"first_last": {"w_bits": 8.5, "a_bits": 8}}}, "quant.first_last.w_bits: expected an integer, got 8.5"),
    ({"quant": {"first_last": {"w_bits": 8, "a_bits": 1}}}, "quant.first_last.a_bits: 1 out of range; allowed: [2, 16]"),
    ({"quant": {"first_last": {"w_bits": 8, "a_bits": 64}}}, "quant.first_last.a_bits: 64 out of range; allowed: [2, 16]"),
    ({"select": {"budget": {"avg_bits": 3, "gbitops": 1.0, "size_mb": None}}},
     "select.budget: give exactly one of avg_bits or gbitops"),
    ({"select": {"budget": {"avg_bits": None, "gbitops": None, "size_mb": None}}},
     "select.budget: give exactly one of avg_bits or gbitops"),
    ({"select": {"budget": {"avg_bits": 1, "gbitops": None, "size_mb": None}}},
     "select.budget.avg_bits: 1.0 out of range; allowed: [2, 16]"),
    ({"finetune": {"methods": []}}, "finetune.methods: must not be empty; allowed: smpq, dmpq, uniform, dmpq_argmax"),
    ({"finetune": {"methods": ["magic"]}}, "finetune.methods: unknown method 'magic'; allowed: smpq, dmpq, uniform"),
    ({"supernet": {"warmup_epochs": 5}}, "supernet.warmup_epochs: 5 exceeds epochs (2)"),
    ({"supernet": {"complexity_form": "square"}}, "supernet.complexity_form: 'square' is not allowed; allowed: hinge, ratio"),
    ({"supernet": {"target": {"avg_bits": 3, "gbitops": 2}}}, "supernet.target: give exactly one of avg_bits or gbitops"),
    ({"shapley": {"value": "top5"}}, "shapley.value: 'top5' is not allowed; allowed: neg_kl, neg_loss, top1"),
    ({"shapley": {"estimator": "kernel"}},
     "shapley.estimator: 'kernel' is not allowed; allowed: owen, within_group, permutation, exact"),
    ({"shapley": {"empty_group": "none"}}, "shapley.empty_group: 'none' is not allowed; allowed: reference, zero"),
    ({"shapley": {"batches": 0}}, "shapley.batches: 0 out of range; allowed: >= 1"),
    ({"shapley": {"bn_recalibration": -1}}, "shapley.bn_recalibration: -1 out of range; allowed: >= 0"),
    ({"shapley": {"reference_bits": 6}}, "shapley.reference_bits: 6 is not a candidate of both quant.w_bits"),
    ({"shapley": {"estimator": "owen", "truncation": 0.5}}, "shapley.truncation: only defined for estimator: permutation"),
    ({"shapley": {"truncation": 1.5}}, "shapley.truncation: 1.5 out of range; allowed: [0.0, 1.0]"),
    ({"shapley": {"direction": "sideways"}}, "shapley.direction: 'sideways' is not allowed; allowed: remove, add"),
    ({"shapley": {"max_permutations": 0}}, "shapley.max_permutations: 0 out of range; allowed: >= 1"),
    ({"shapley": {"estimator": "owen", "max_permutations": 7, "antithetic": True}}, "shapley.max_permutations: 7 must be even with antithetic: true"),
    ({"shapley": {"direction": "add", "truncation": 0.5}}, "shapley.truncation: only defined for estimator: permutation"),
    ({"shapley": {"value": "neg_loss", "truncation": 0.5}}, "shapley.truncation: only defined for estimator: permutation"),
    ({"tracking": []}, "tracking: expected a mapping of keys, got list"),
    ({"runtime": {"loader_workers": -1}}, "runtime.loader_workers: -1 out of range; allowed: >= 0"),
    ({"data": {"root": None, "dataset": "image_folder", "image_size": 4}}, "data.image_size: 4 out of range; allowed: [8, 1024]"),
])
def test_bad_input_names_key_and_allowed_values(tmp_path, data, message):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, data))
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_flat_dict_for_logging():
    flat = as_flat_dict(Params().quant, "quant")
    assert flat == {"quant.w_bits": [2, 3, 4, 8], "quant.a_bits": [2, 3, 4, 8],
                    "quant.first_last.w_bits": 8, "quant.first_last.a_bits": 8}


@pytest.mark.parametrize(("section", "key", "value"), [
    ("pretrain", "lr", float("nan")), ("pretrain", "lr", float("inf")), ("finetune", "momentum", float("nan")),
    ("shapley", "truncation", float("nan")), ("select", "budget", {"gbitops": float("inf")}),
    ("select", "budget", {"gbitops": float("nan")}), ("select", "budget", {"avg_bits": 3, "size_mb": float("inf")}),
    ("supernet", "single_path", float("-inf"))])
def test_non_finite_floats_are_rejected_with_the_key_path(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}.*(nan|inf).* not allowed; give a finite number"):
        load_params(write(tmp_path, {section: {key: value}}))


def test_budget_values_are_bounded(tmp_path):
    with pytest.raises(ConfigError, match=r"select\.budget\.gbitops: 1e\+20 out of range; allowed: \[0.0, 1"):
        load_params(write(tmp_path, {"select": {"budget": {"gbitops": 1e20}}}))


def test_a_duplicate_key_is_an_error_naming_the_key_and_its_line(tmp_path):
    path = write(tmp_path, {})
    lines = path.read_text().splitlines()
    at = lines.index("shapley:") + 1
    lines[at:at] = ["  max_permutations: 4", "  max_permutations: 6"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == (f"{path}: line {at + 2}: duplicate key 'max_permutations' (first set on line "
                              f"{at + 1}); keep only one of them")


def test_malformed_yaml_is_one_line_with_line_and_column(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ndata:\n  dataset: [fashion_mnist\n  root: null\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:") and "not valid YAML" in message
    assert message.split(":")[1:3] == ["4", "7"] and message.endswith("fix the syntax there")


def test_model_name_is_checked_on_load_against_the_registry(tmp_path):
    from smpq.config import MODEL_NAMES
    from smpq.models import list_models

    assert sorted(MODEL_NAMES) == sorted(list_models())
    with pytest.raises(ConfigError, match=r"model\.name: 'resnet50' is not allowed; allowed: compact_resnet, "):
        load_params(write(tmp_path, {"model": {"name": "resnet50"}}))


def test_config_weight_step_grads_are_the_quantizers():
    """``finetune.weight_step_grad`` is checked on load against ``smpq.config.STEP_GRADS``, which must name
    exactly what ``smpq.quant.set_weight_step_grad`` accepts (config does not import torch)."""
    assert STEP_GRADS == WEIGHT_STEP_GRADS
