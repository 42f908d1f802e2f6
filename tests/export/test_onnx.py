"""ONNX QDQ export: a checked graph at each layer's own bits that onnxruntime runs like PyTorch; a bit-width
it cannot express stops the export in one line, before anything is written."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from smpq.errors import ExportError
from smpq.export import OPSET, export_model, export_onnx, read_packed
from smpq.export.parity import onnx_session
from smpq.quant import apply_policy
from tests.export.conftest import INPUT_SHAPE, float_model, images, policy_of, quantized


def test_exported_graph_passes_the_checker_and_matches_pytorch(mixed):
    policy, model = mixed
    proto = export_onnx(model, INPUT_SHAPE)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET == 13
    kinds = [node.op_type for node in proto.graph.node]
    assert kinds.count("QuantizeLinear") == len(policy) and kinds.count("DequantizeLinear") == 2 * len(policy)
    x = images(32, seed=7)
    with torch.no_grad():
        expected = model(x).numpy()
    got = onnx_session(proto.SerializeToString(), threads=1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_each_layer_carries_its_own_integer_range(mixed):
    policy, model = mixed
    weights = {t.name: numpy_helper.to_array(t) for t in export_onnx(model, INPUT_SHAPE).graph.initializer}
    for name, bits in policy.items():
        q = weights[f"{name}.weight_int"]
        assert q.dtype == np.int8 and q.min() >= -(2 ** (bits.w_bits - 1)) and q.max() <= 2 ** (bits.w_bits - 1) - 1
        assert weights[f"{name}.weight_scale"].shape == (q.shape[0],)  # per output channel
        layer = model.get_submodule(name)
        zero = weights[f"{name}.input_zero_point"]
        assert zero.shape == () and zero.dtype == (np.int8 if layer.a_signed else np.uint8)
    signed = {model.get_submodule(name).a_signed for name in policy}
    assert signed == {True, False}  # the stem sees signed images, the layers after a ReLU an unsigned grid


def test_a_bit_width_onnx_cannot_express_fails_in_one_line_before_writing(tmp_path):
    bits = [(8, 8)] + [(4, 4)] * 8 + [(8, 8)]
    bits[2] = (16, 4)
    model = apply_policy(float_model(), policy_of(bits)).eval()
    with pytest.raises(ExportError) as info:
        export_model(model, model, input_shape=INPUT_SHAPE, table=None, policy=None, out=tmp_path / "out",
                     batches=lambda: [], threads=1)
    message = str(info.value)
    assert message == ("layer 'blocks.0.conv2': 16-bit weights cannot be expressed in ONNX opset 13 QDQ "
                       "(INT8/UINT8 storage holds at most 8 bits); export a policy with 8 bits or fewer per layer")
    assert not (tmp_path / "out").exists()


def test_export_model_writes_both_files_after_every_check(mixed, table, tmp_path):
    policy, model = mixed
    x, labels = images(300, seed=9), torch.arange(300) % 5
    batches = lambda: [(x[i:i + 128], labels[i:i + 128]) for i in range(0, 300, 128)]
    result = export_model(model, quantized(policy), input_shape=INPUT_SHAPE, table=table, policy=policy,
                          out=tmp_path / "out", batches=batches, threads=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "weights.smpq"]
    assert result["onnx"]["images"] == 300 and result["onnx"]["top1_agreement"] >= 0.999
    assert result["unpacked"]["equal"] and result["unpacked"]["layers"] == len(policy)
    reference = result["integer_reference"]
    assert reference["w_bits"] == 2 and reference["accumulator_dtype"] == "int32"
    assert reference["max_abs_error"] <= 1e-5 * reference["max_abs_output"]
    size = result["size"]
    assert size["onnx_bytes"] == (tmp_path / "out/model.onnx").stat().st_size
    assert size["packed_bytes"] == read_packed(tmp_path / "out/weights.smpq").section_bytes("weights") + \
        size["bias_bytes"]


def test_a_module_without_an_onnx_translation_is_named(mixed):
    model = mixed[1]
    model.blocks[0].relu1 = torch.nn.Sigmoid()
    with pytest.raises(ExportError, match=r"cannot export Sigmoid \(Sigmoid\(\)\) to ONNX; supported: quantized"):
        export_onnx(model, INPUT_SHAPE)


def test_logit_parity_allows_a_few_images_rounded_the_other_way_but_not_a_different_graph():
    from smpq.errors import ExportError
    from smpq.export.parity import check_logits

    near = {"logit_agreement": 0.995, "top1_agreement": 1.0}
    check_logits(near)  # a grid-boundary flip on 0.5 % of the images: still the model
    with pytest.raises(ExportError, match=r"on 40.00 % of the test images .* the ONNX graph is not the model"):
        check_logits({"logit_agreement": 0.6, "top1_agreement": 1.0})
