"""`seg-perception models` and `seg-perception export` from the command line."""
import json
import re
import subprocess
import sys

import onnx
import pytest
from tiny_seg_model import TinySegmenter, seeded_tiny, tiny_info

from seg_perception import cli
from seg_perception.models.checkpoint import make_checkpoint, save_checkpoint
from seg_perception.model_info import load_model_info
from seg_perception.models import list_models


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_name):
    path = tmp_path / 'tiny.pt'
    info = tiny_info(input_size=(24, 32), width=6)
    save_checkpoint(path, make_checkpoint(seeded_tiny(width=6), info, iteration=7))
    return path, info


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def test_models_lists_every_architecture_with_its_count(capsys, tiny_name):
    assert cli.main(['models']) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:-1]}
    assert sorted(rows) == list_models()
    assert rows[tiny_name] == f'{parameter_count(TinySegmenter(19)):,}'
    assert all(re.fullmatch(r'[\d,]+', count) and count != '0' for count in rows.values())
    assert f'{len(rows)} architectures' in out.splitlines()[-1]


def test_models_json_follows_num_classes(capsys, tiny_name):
    assert cli.main(['models', '--json', '--num-classes', '5']) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing['num_classes'] == 5
    by_name = {row['name']: row for row in listing['models']}
    assert sorted(by_name) == list_models()
    assert by_name[tiny_name]['parameters'] == parameter_count(TinySegmenter(5))
    assert by_name[tiny_name]['size_multiple'] == TinySegmenter.size_multiple
    assert not [row for row in listing['models'] if 'error' in row]


def test_models_rejects_too_few_classes(capsys):
    assert cli.main(['models', '--num-classes', '1']) == 2
    assert 'num-classes must be at least 2' in capsys.readouterr().err


@pytest.mark.slow
def test_models_runs_as_a_program():
    # The real entry point, in a fresh interpreter: only the registered networks.
    done = subprocess.run([sys.executable, '-m', 'seg_perception.cli', 'models', '--json'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = [row['name'] for row in json.loads(done.stdout)['models']]
    assert names == list_models()


def test_export_writes_a_valid_model_with_matching_metadata(capsys, tmp_path, tiny_checkpoint):
    checkpoint, info = tiny_checkpoint
    output = tmp_path / 'models' / 'tiny.onnx'
    status = cli.main(['export', '--checkpoint', str(checkpoint), '--output', str(output),
                       '--input-size', '32x48', '--confidence',
                       '--output-resolution', 'network'])
    assert status == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(output)
    assert any(re.search(r'ONNX Runtime equals PyTorch on 100\.0+%', line) for line in out)
    onnx.checker.check_model(onnx.load(str(output)), full_check=True)
    written = load_model_info(str(output))
    assert written.architecture == info.architecture
    assert written.class_names == info.class_names and written.palette == info.palette
    assert written.arch_config == info.arch_config
    assert written.input_size == (32, 48)
    assert written.outputs == ['labels', 'confidence']
    assert written.output_resolution == 'network'


def test_export_probabilities_option_takes_names_spaced_or_comma_separated(
        capsys, tmp_path, tiny_checkpoint):
    checkpoint, info = tiny_checkpoint
    names = list(info.class_names[:3])
    output = tmp_path / 'p.onnx'
    assert cli.main(['export', '--checkpoint', str(checkpoint), '--output', str(output),
                     '--probabilities', f'{names[0]},{names[1]}', names[2]]) == 0
    assert re.search(r'ONNX Runtime equals PyTorch on 100\.0+%', capsys.readouterr().out)
    written = load_model_info(str(output))
    assert written.probabilities == names and written.outputs == ['labels', 'probabilities']
    assert cli.main(['export', '--checkpoint', str(checkpoint), '--output',
                     str(tmp_path / 'q.onnx'), '--no-verify', '--probabilities', 'unicorn']) == 2
    assert 'not among the classes' in capsys.readouterr().err


def test_export_defaults_come_from_the_checkpoint(capsys, tmp_path, tiny_checkpoint):
    checkpoint, info = tiny_checkpoint
    output = tmp_path / 'plain.onnx'
    assert cli.main(['export', '--checkpoint', str(checkpoint), '--output', str(output),
                     '--no-verify']) == 0
    written = load_model_info(str(output))
    assert written.input_size == info.input_size
    assert written.outputs == ['labels'] and written.output_resolution == 'camera'


@pytest.mark.parametrize('problem', ['missing', 'corrupt'])
def test_export_of_a_bad_checkpoint_is_one_clean_line(capsys, tmp_path, problem):
    checkpoint = tmp_path / 'bad.pt'
    if problem == 'corrupt':
        checkpoint.write_bytes(b'not a checkpoint at all')
    output = tmp_path / 'never.onnx'
    status = cli.main(['export', '--checkpoint', str(checkpoint), '--output', str(output)])
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert err.startswith('seg-perception export: error: ')
    assert str(checkpoint) in err
    assert not output.exists()


def test_export_failure_is_one_clean_line(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    from seg_perception.deploy import export as export_module

    def broken(*args, **kwargs):
        raise RuntimeError('unsupported operator')

    monkeypatch.setattr(export_module, '_export_dynamo', broken)
    monkeypatch.setattr(export_module, '_export_legacy', broken)
    status = cli.main(['export', '--checkpoint', str(tiny_checkpoint[0]),
                       '--output', str(tmp_path / 'x.onnx')])
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert 'export failed' in err and 'unsupported operator' in err


def test_export_bad_input_size_is_a_usage_error(capsys, tiny_checkpoint, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['export', '--checkpoint', str(tiny_checkpoint[0]),
                  '--output', str(tmp_path / 'x.onnx'), '--input-size', '512by1024'])
    assert exit_info.value.code == 2
    assert 'expected HEIGHTxWIDTH' in capsys.readouterr().err


def test_missing_third_party_module_names_the_extra(capsys, monkeypatch):
    def missing_tensorrt(name):
        raise ModuleNotFoundError("No module named 'tensorrt'", name='tensorrt')

    monkeypatch.setattr(cli.importlib, 'import_module', missing_tensorrt)
    assert cli.main(['build-engine']) == 2
    assert 'Install the extra' in capsys.readouterr().err


def test_missing_part_of_seg_perception_is_not_blamed_on_extras(monkeypatch):
    def broken_package(name):
        raise ModuleNotFoundError("No module named 'seg_perception.no_such_module'",
                                  name='seg_perception.no_such_module')

    monkeypatch.setattr(cli.importlib, 'import_module', broken_package)
    with pytest.raises(ModuleNotFoundError, match='seg_perception.no_such_module'):
        cli.main(['models'])
