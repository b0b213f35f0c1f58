"""`seg-perception bench` on a tiny model: every configuration runs and is reported."""
import json

import pytest

import runtime_models as rm
from seg_perception.cli import main


def tiny_unet(folder):
    """A registered architecture (the bench's workers rebuild it from its checkpoint)."""
    from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
    from seg_perception.deploy.export import export_onnx
    from seg_perception.models import build_model
    info = rm.colour_info()
    info.architecture, info.arch_config = 'unet', {'base_width': 4, 'depth': 2}
    model = build_model('unet', info.num_classes, **info.arch_config).eval()
    info = export_onnx(model, info, str(folder / 'unet.onnx'), output_resolution='network')
    return (str(folder / 'unet.onnx'),
            save_checkpoint(str(folder / 'unet.pt'), make_checkpoint(model, info)))


@pytest.mark.slow
def test_bench_reports_pipeline_and_naive_side_by_side(tmp_path):
    model, checkpoint = tiny_unet(tmp_path)
    report_path = tmp_path / 'results.json'
    status = main(['bench', '--model', model, '--checkpoint', checkpoint, '--naive',
                   '--no-torchvision', '--input-size', '90x160', '--batch', '2',
                   '--iterations', '3', '--warmup', '1', '--backend', 'onnxruntime',
                   '--precision', 'fp32', '--output', str(report_path)])
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report['command'].startswith('seg-perception')
    assert report['machine']['cores']
    rows = {row['label']: row for row in report['results']}
    assert set(rows) == {'pipeline onnxruntime fp32', 'naive, same model'}
    ours = rows['pipeline onnxruntime fp32']
    assert ours['describe']['name'] == 'onnxruntime' and not ours['torch_loaded']
    for stage in ('convert', 'infer', 'postprocess', 'total'):
        stats = ours['stages_ms'][stage]
        assert 0 <= stats['min'] <= stats['median'] <= stats['p95']
    assert ours['stages_ms']['infer']['median'] <= ours['stages_ms']['total']['median']
    assert set(ours['graph_ms']) == {'preprocess', 'network', 'postprocess'}
    assert ours['fps'] > 0 and ours['peak_rss_mb'] > 10
    assert rows['naive, same model']['torch_loaded']

    markdown = tmp_path / 'RESULTS.md'
    markdown.write_text('old numbers\n<!-- notes: kept when the benchmark rewrites this file -->'
                        '\nmy notes\n')
    assert main(['bench', '--model', model, '--input-size', '40x60', '--iterations', '1',
                 '--warmup', '0', '--backend', 'onnxruntime,onnxruntime-cpu',
                 '--output', str(markdown)]) == 0
    text = markdown.read_text()
    assert 'old numbers' not in text and text.rstrip().endswith('my notes')
    assert '| pipeline onnxruntime-cpu fp32 |' in text


def test_an_int8_model_is_reported_at_the_precision_it_runs(tmp_path):
    """--precision names what to ask for (fp32 by default); a quantised file runs as int8,
    and its row must say so."""
    import os
    from seg_perception.model_info import default_model_path
    int8 = os.path.join(os.path.dirname(default_model_path()), 'default_model.cpu.int8.onnx')
    if not os.path.exists(int8):
        pytest.skip('no INT8 default model shipped')
    report_path = tmp_path / 'int8.json'
    assert main(['bench', '--model', int8, '--input-size', '60x80', '--iterations', '1',
                 '--warmup', '0', '--backend', 'onnxruntime', '--output', str(report_path)]) == 0
    (row,) = json.loads(report_path.read_text())['results']
    assert row['label'] == 'pipeline onnxruntime int8'
    assert row['describe']['precision'] == 'int8'


def test_bench_refuses_unknown_choices(capsys):
    assert main(['bench', '--backend', 'openvino']) == 2
    assert "unknown backend 'openvino'" in capsys.readouterr().err
    assert main(['bench', '--model', '/nonexistent/model.onnx']) == 2
    assert 'model file not found' in capsys.readouterr().err
