"""precision 'auto': the INT8 form beside the model on a CPU with VNNI, fp32 without; fp16 or
int8 (QDQ) on TensorRT. The CPU's flags are faked, so both answers are tested on any machine."""
import argparse
import json
import logging
import shutil

import cv2
import numpy as np
import pytest

from seg_perception.commands import _args
from seg_perception.model_info import default_model_path
from seg_perception.ros import params
from seg_perception.runtime import backends, cpu_features
from seg_perception.runtime.pipeline import SegmentationPipeline

VNNI = frozenset({'sse4_2', 'avx2', 'avx512f', 'avx512_vnni'})
AVX_VNNI = frozenset({'sse4_2', 'avx2', 'avx_vnni'})
NO_VNNI = frozenset({'sse4_2', 'avx2', 'avx512f'})


def fake_cpu(monkeypatch, flags):
    monkeypatch.setattr(cpu_features, 'cpu_flags', lambda path=cpu_features.CPUINFO: flags)


# -- the CPU's instructions ------------------------------------------------------------
@pytest.mark.parametrize('flags,expected', [
    ('fpu sse4_2 avx2 avx512f avx512_vnni avx_vnni', 'AVX512-VNNI'),
    ('fpu sse4_2 avx2 avx_vnni', 'AVX-VNNI'),
    ('fpu sse4_2 avx2 avx512f avx512bw', None)])
def test_int8_dot_product_instructions_are_read_from_cpuinfo(tmp_path, flags, expected):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n'
                       f'processor\t: 1\nflags\t\t: {flags}\n')
    assert cpu_features.int8_dot_product(cpu_features.cpu_flags(str(cpuinfo))) == expected
    assert cpu_features.cpu_model_name(str(cpuinfo)) == 'Some CPU'


def test_the_benchmarks_machine_line_names_this_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_features.platform, 'processor', lambda: '')
    monkeypatch.setattr(cpu_features.platform, 'machine', lambda: 'aarch64')
    # no cpuinfo (not Linux): what the platform module says
    assert cpu_features.cpu_description(str(tmp_path / 'missing')) == 'aarch64'
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Some CPU\n')
    assert cpu_features.cpu_description(str(cpuinfo)) == 'Some CPU'


def test_an_unreadable_cpuinfo_means_no_vnni(tmp_path):
    assert cpu_features.cpu_flags(str(tmp_path / 'missing')) == frozenset()
    assert cpu_features.cpu_model_name(str(tmp_path / 'missing')) == ''
    assert cpu_features.int8_dot_product(frozenset()) is None


# -- the CPU backend -------------------------------------------------------------------
@pytest.mark.parametrize('flags,name', [(VNNI, 'AVX512-VNNI'), (AVX_VNNI, 'AVX-VNNI')])
@pytest.mark.parametrize('backend', ['onnxruntime', 'auto'])
def test_a_vnni_cpu_runs_the_int8_form_beside_the_model(monkeypatch, flags, name, backend):
    fake_cpu(monkeypatch, flags)
    pipeline = SegmentationPipeline(None, backend=backend, precision='auto')
    described = pipeline.describe()
    assert described['name'] == 'onnxruntime' and described['precision'] == 'int8'
    assert described['model'].endswith('default_model.cpu.int8.onnx')
    assert described['precision_reason'] == f'auto: {name}, default_model.cpu.int8.onnx'
    assert pipeline.precision_text() == f'int8 (auto: {name}, default_model.cpu.int8.onnx)'


def test_the_choice_and_its_reason_are_logged_once_at_info(monkeypatch, caplog):
    # The pipeline's start-up line says it; the backend's own line is DEBUG (it was a repeat).
    fake_cpu(monkeypatch, VNNI)
    with caplog.at_level(logging.INFO, logger='seg_perception'):
        SegmentationPipeline(None, backend='onnxruntime', precision='auto')
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    said = [line for line in info if 'auto: AVX512-VNNI, default_model.cpu.int8.onnx' in line]
    assert len(said) == 1 and said[0].startswith('pipeline: onnxruntime (int8 (auto:'), info


@pytest.mark.parametrize('backend', ['onnxruntime', 'auto'])
def test_a_cpu_without_vnni_runs_fp32(monkeypatch, backend):
    fake_cpu(monkeypatch, NO_VNNI)
    pipeline = SegmentationPipeline(None, backend=backend, precision='auto')
    described = pipeline.describe()
    assert described['precision'] == 'fp32' and described['model'] == default_model_path()
    assert 'no int8 dot-product instructions' in described['precision_reason']
    assert pipeline.precision_text().startswith('fp32 (auto: this CPU has no int8')


def test_without_an_int8_form_beside_it_the_model_runs_as_it_is(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, VNNI)
    model = str(tmp_path / 'mine.onnx')
    shutil.copy(default_model_path(), model)
    described = SegmentationPipeline(model, backend='onnxruntime', precision='auto').describe()
    assert described['precision'] == 'fp32' and described['model'] == model
    assert described['precision_reason'] == 'auto: no mine.cpu.int8.onnx beside the model'


def test_an_int8_form_that_does_not_fit_the_model_is_not_used(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, VNNI)
    model = str(tmp_path / 'mine.onnx')
    shutil.copy(default_model_path(), model)
    shutil.copy(default_model_path(), str(tmp_path / 'mine.cpu.int8.onnx'))    # not int8
    described = SegmentationPipeline(model, backend='onnxruntime', precision='auto').describe()
    assert described['precision'] == 'fp32' and described['model'] == model
    assert 'does not fit the model (precision differ)' in described['precision_reason']


def test_an_int8_model_named_directly_runs_int8(monkeypatch):
    fake_cpu(monkeypatch, NO_VNNI)
    int8 = backends.cpu_int8_form(default_model_path())
    described = SegmentationPipeline(int8, backend='onnxruntime', precision='auto').describe()
    assert described['precision'] == 'int8' and described['model'] == int8
    assert described['precision_reason'] == 'auto: the file is int8'


def test_a_precision_asked_for_is_not_explained_as_auto(monkeypatch):
    fake_cpu(monkeypatch, VNNI)
    pipeline = SegmentationPipeline(None, backend='onnxruntime', precision='fp32')
    assert pipeline.describe()['precision_reason'] == '' and pipeline.precision_text() == 'fp32'
    assert pipeline.describe()['model'] == default_model_path()


# -- TensorRT --------------------------------------------------------------------------
class FakeTensorRT:
    def __init__(self, model_path, info, precision, engine_cache_dir, reason):
        self.model_path, self.info, self.precision = model_path, info, precision
        self.precision_reason = ''


@pytest.mark.parametrize('model,expected', [('fp32', 'fp16'), ('int8', 'int8')])
@pytest.mark.parametrize('backend', ['tensorrt', 'auto'])
def test_tensorrt_runs_fp16_or_int8_from_a_qdq_model(monkeypatch, model, expected, backend):
    from seg_perception.runtime.trt import backend as trt_backend
    monkeypatch.setattr(trt_backend, 'tensorrt_status', lambda: (True, 'faked'))
    monkeypatch.setattr(trt_backend, 'TensorRTBackend', FakeTensorRT)
    fake_cpu(monkeypatch, VNNI)         # the CPU's INT8 form is for the CPU only
    path = default_model_path() if model == 'fp32' else \
        backends.cpu_int8_form(default_model_path())
    chosen = backends.create_backend(path, backend, 'auto')
    assert chosen.precision == expected and chosen.model_path == path
    assert chosen.precision_reason == ('auto: fp16 on TensorRT' if model == 'fp32'
                                       else 'auto: a quantised (QDQ) model')


# -- the defaults ----------------------------------------------------------------------
def test_auto_is_the_default_of_the_node_and_the_commands():
    parser = argparse.ArgumentParser()
    _args.add_runtime_options(parser)
    assert parser.parse_args([]).precision == 'auto'
    assert parser.parse_args(['--precision', 'fp32']).precision == 'fp32'
    (spec,) = [p for p in params.NODE_PARAMS if p.name == 'precision']
    assert spec.default == 'auto' and 'auto' in spec.choices


def test_the_node_reports_the_precision_and_why_and_the_file_that_runs():
    from seg_perception.ros.diagnostics import backend_values
    values = backend_values({
        'name': 'onnxruntime', 'precision': 'int8', 'device': 'cpu',
        'model': '/x/default_model.cpu.int8.onnx',
        'precision_reason': 'auto: AVX512-VNNI, default_model.cpu.int8.onnx'}, '/x/m.onnx')
    assert values == {'backend': 'onnxruntime', 'device': 'cpu', 'precision': 'int8',
                      'precision_reason': 'auto: AVX512-VNNI, default_model.cpu.int8.onnx',
                      'model': '/x/default_model.cpu.int8.onnx'}
    # a backend that does not say its file (or device): the model the node was given
    values = backend_values({'name': 'pytorch', 'precision': 'fp32', 'device': ''}, '/x/m.pt')
    assert values == {'backend': 'pytorch', 'precision': 'fp32', 'model': '/x/m.pt'}


# -- what an evaluation records --------------------------------------------------------
def one_camvid_frame(root):
    """A CamVid val split (SegNet layout) of one grey frame labelled road."""
    for folder in ('val', 'valannot'):
        (root / folder).mkdir(parents=True)
    cv2.imwrite(str(root / 'val' / 'a.png'), np.full((90, 120, 3), 128, np.uint8))
    cv2.imwrite(str(root / 'valannot' / 'a.png'), np.full((90, 120), 3, np.uint8))
    (root / 'val.txt').write_text('val/a.png valannot/a.png\n')
    return str(root)


@pytest.mark.parametrize('flags,precision', [(VNNI, 'int8'), (NO_VNNI, 'fp32')])
def test_an_evaluation_names_the_file_that_ran_and_why(monkeypatch, tmp_path, capsys, flags,
                                                       precision):
    """`evaluate --model default_model.onnx` at 'auto' runs the INT8 file beside it on a VNNI
    CPU: the printed line, metrics.json and metrics.md say so, so no INT8 figure passes for
    an fp32 one."""
    from seg_perception.cli import main as cli_main
    fake_cpu(monkeypatch, flags)
    camvid = one_camvid_frame(tmp_path / 'camvid')
    out = tmp_path / 'eval'
    assert cli_main(['evaluate', '--model', default_model_path(), '--dataset', 'camvid',
                     '--root', camvid, '--split', 'val',
                     '--backend', 'onnxruntime', '--output', str(out)]) == 0
    expected_file = backends.cpu_int8_form(default_model_path()) if precision == 'int8' \
        else default_model_path()
    result = json.loads((out / 'metrics.json').read_text())
    inference = result['inference']
    assert inference['precision'] == precision and inference['model_run'] == expected_file
    assert inference['precision_reason'].startswith('auto: ')
    assert f'(onnxruntime, {precision}: auto: ' in capsys.readouterr().out
    markdown = (out / 'metrics.md').read_text()
    assert f'- precision: {precision} (auto: ' in markdown
    assert ('- file run: `' in markdown) == (precision == 'int8')
