"""The tools behind a new default model (issue #24): benchmarks/compare_graphs.py (does a
retrained model run the shipped one's network?) and drivable_bonnet.py's --model."""
import argparse
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                'benchmarks'))
import compare_graphs  # noqa: E402
import drivable_bonnet  # noqa: E402

from seg_perception.model_info import default_model_path  # noqa: E402
from seg_perception.runtime.backends import cpu_int8_form  # noqa: E402


@pytest.fixture
def compare(monkeypatch, capsys):
    """compare_graphs.py's exit code and printed report for two model files."""
    def run(first, second):
        monkeypatch.setattr(sys, 'argv', ['compare_graphs.py', str(first), str(second)])
        code = compare_graphs.main()
        return code, capsys.readouterr().out
    return run


def test_other_weights_in_the_same_network_compare_equal(tmp_path, compare):
    model = onnx.load(default_model_path())
    first = model.graph.initializer[0]
    retrained = numpy_helper.from_array(numpy_helper.to_array(first) * 0.5 + 1, first.name)
    model.graph.initializer[0].CopyFrom(retrained)
    onnx.save(model, str(tmp_path / 'retrained.onnx'))
    code, out = compare(default_model_path(), tmp_path / 'retrained.onnx')
    assert code == 0 and 'same runtime cost' in out


def test_a_wider_layer_or_another_graph_is_named(tmp_path, compare):
    model = onnx.load(default_model_path())
    first = numpy_helper.to_array(model.graph.initializer[0])
    wider = np.concatenate([first, first[:1]])               # one more output channel
    model.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(wider, model.graph.initializer[0].name))
    onnx.save(model, str(tmp_path / 'wider.onnx'))
    code, out = compare(default_model_path(), tmp_path / 'wider.onnx')
    assert code == 1
    assert f"weight 0: ('FLOAT', {first.shape}) against ('FLOAT', {wider.shape})" in out
    code, out = compare(default_model_path(), cpu_int8_form(default_model_path()))
    assert code == 1 and 'DequantizeLinear' in out and 'the graphs differ' in out


def test_bonnet_models_are_named_files(tmp_path):
    assert drivable_bonnet.named_model(f'try={default_model_path()}') == \
        ('try', default_model_path())
    for text, message in (('nope', 'expected NAME=PATH'), ('=x.onnx', 'expected NAME=PATH'),
                          (f'a={tmp_path / "missing.onnx"}', 'no such model file')):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            drivable_bonnet.named_model(text)
    shipped = drivable_bonnet.shipped_models()
    assert shipped[0] == ('fp32', default_model_path())
    assert shipped[1] == ('INT8', cpu_int8_form(default_model_path()))
