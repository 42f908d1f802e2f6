"""The packed weight file: its size is the cost model's to the byte, it restores the model exactly, and a file
whose manifest disagrees with its data is refused with a clear message."""

import json
import math
import struct

import numpy as np
import pytest
import torch

from smpq.cost import size_bytes
from smpq.errors import ArtifactError, ExportError
from smpq.export import integer_grid, load_packed, read_packed, write_packed
from smpq.export.packed import MAGIC
from smpq.export.size import size_report
from tests.export.conftest import POLICIES, images, policy_of, quantized


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_packed_weights_and_biases_equal_the_cost_model_size(name, table, tmp_path):
    policy = policy_of(POLICIES[name])
    manifest = write_packed(quantized(policy), tmp_path / "w.smpq")
    sections = {s: v["bytes"] for s, v in manifest["sections"].items()}
    priced = size_bytes(table, policy)
    assert sections["weights"] + sections["biases"] == math.ceil(priced) == priced  # every layer byte-aligned here
    report = size_report(manifest, table, policy, (tmp_path / "w.smpq").stat().st_size, onnx_bytes=0)
    assert report["packed_bytes"] == priced and report["scale_bytes"] == sections["scales"] > 0
    assert report["manifest_bytes"] == len(json.dumps(manifest, separators=(",", ":")).encode())
    assert [row["cost_model_bytes"] for row in report["layers"]] == [
        table[row["layer"]].size_bytes(policy[row["layer"]].w_bits) for row in report["layers"]]


def test_a_policy_the_size_report_does_not_price_is_refused(mixed, table, tmp_path):
    policy, model = mixed
    manifest = write_packed(model, tmp_path / "w.smpq")
    other = policy_of(POLICIES["uniform2"])
    with pytest.raises(ExportError, match="packed weight bits of layers .* are not the policy's"):
        size_report(manifest, table, other, 0, 0)


def test_unpacking_restores_the_checkpoint_integers_and_outputs(mixed, tmp_path):
    policy, model = mixed
    write_packed(model, tmp_path / "w.smpq")
    packed = read_packed(tmp_path / "w.smpq")
    blank = quantized(policy)
    with torch.no_grad():
        for layer in blank.modules():  # nothing of the original may survive in the blank model
            if hasattr(layer, "w_quant"):
                layer.weight.normal_()
    load_packed(blank, packed)
    wanted = integer_grid(model)
    assert all(np.array_equal(packed.integers[n], wanted[n]) for n in wanted)
    assert all(np.array_equal(v, wanted[n]) for n, v in integer_grid(blank).items())
    assert {e["w_bits"] for e in packed.manifest["layers"]} == {2, 3, 4, 5, 8}
    assert sum(e["folded_norm"] is not None for e in packed.manifest["layers"]) == 9  # every conv, not the fc
    x = images(8)
    with torch.no_grad():
        torch.testing.assert_close(blank(x), model(x), rtol=1e-5, atol=1e-5)


def _rewrite(path, edit):
    blob = path.read_bytes()
    (length,) = struct.unpack("<I", blob[8:12])
    manifest = json.loads(blob[12:12 + length])
    edit(manifest)
    header = json.dumps(manifest).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(header)) + header + blob[12 + length:])


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["layers"][3].update(w_bits=m["layers"][3]["w_bits"] + 1),
     "its layers need .* bytes of packed weights, the weights section has"),
    (lambda m: m["sections"]["scales"].update(bytes=m["sections"]["scales"]["bytes"] + 4),
     "its sections total .* bytes, the file holds"),
    (lambda m: m["layers"][2].update(shape=[1, 1, 1, 1]), "layer .* do not follow its shape"),
    (lambda m: m["layers"][4].update(bias_offset=10**6), "layer .*: bias .* lie outside"),
])
def test_a_manifest_that_disagrees_with_its_data_is_refused(mixed, tmp_path, edit, message):
    path = tmp_path / "w.smpq"
    write_packed(mixed[1], path)
    _rewrite(path, edit)
    with pytest.raises(ArtifactError, match=f"w.smpq: manifest disagrees with the data: {message}") as info:
        read_packed(path)
    assert "\n" not in str(info.value) and "re-export the model" in str(info.value)


def test_a_truncated_or_foreign_file_is_refused(mixed, tmp_path):
    path = tmp_path / "w.smpq"
    write_packed(mixed[1], path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ArtifactError, match="its sections total .* bytes, the file holds"):
        read_packed(path)
    path.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(ArtifactError, match="not an SMPQ packed weight file"):
        read_packed(path)
    with pytest.raises(ArtifactError, match="packed weight file not found"):
        read_packed(tmp_path / "missing.smpq")


def test_a_model_at_other_bits_does_not_take_the_file(mixed, tmp_path):
    write_packed(mixed[1], tmp_path / "w.smpq")
    with pytest.raises(ArtifactError, match="build the model with the policy the file was exported from"):
        load_packed(quantized(policy_of(POLICIES["uniform2"])), tmp_path / "w.smpq")


def test_state_the_packed_format_would_lose_is_refused(mixed, tmp_path):
    model = mixed[1]
    model.register_parameter("temperature", torch.nn.Parameter(torch.ones(1)))
    with pytest.raises(ExportError, match=r"these parameters belong to neither: \['temperature'\]"):
        write_packed(model, tmp_path / "w.smpq")
    assert not (tmp_path / "w.smpq").exists()
