"""One exception root, one vocabulary of runtime choices, and how the CLI prints errors."""
import logging
import types

import pytest

from seg_perception import choices, cli, errors
from seg_perception.errors import InvalidValueError, SegPerceptionError, UnknownNameError


def test_package_errors_share_one_root_and_keep_their_builtin_bases():
    from seg_perception.config import ConfigError
    from seg_perception.data.common import MissingDataError
    from seg_perception.model_info import ModelInfoError, ModelNotFoundError
    from seg_perception.replay.bag_io import BagError
    from seg_perception.ros.params import ParameterError
    from seg_perception.runtime.trt.lock import LockTimeoutError
    for error, builtin in ((ConfigError, ValueError), (ModelInfoError, ValueError),
                           (BagError, ValueError), (ParameterError, ValueError),
                           (MissingDataError, FileNotFoundError),
                           (ModelNotFoundError, FileNotFoundError),
                           (LockTimeoutError, TimeoutError), (UnknownNameError, KeyError)):
        assert issubclass(error, SegPerceptionError) and issubclass(error, builtin), error
    # A KeyError subclass prints its sentence, not a quoted key.
    assert str(UnknownNameError('unknown architecture x')) == 'unknown architecture x'


def _command(monkeypatch, raises):
    def run(args):
        raise raises

    module = types.SimpleNamespace(configure_parser=lambda parser: None, run=run)
    monkeypatch.setattr(cli.importlib, 'import_module', lambda name: module)


@pytest.mark.parametrize('raised', [
    InvalidValueError('--count must be at least 1'),
    errors.CommandError('the sample bag is missing'),
    PermissionError(13, 'Permission denied', '/readonly/out'),
])
def test_user_errors_and_os_errors_are_one_line(monkeypatch, capsys, raised):
    _command(monkeypatch, raised)
    assert cli.main(['models']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('seg-perception models: error: ') and len(err.splitlines()) == 1
    assert str(raised) in err


@pytest.mark.parametrize('bug', [KeyError('num_classes'), TypeError('unexpected keyword'),
                                 ValueError('plain ValueError from a library')])
def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch, bug):
    _command(monkeypatch, bug)
    with pytest.raises(type(bug)):
        cli.main(['models'])


def test_backend_aliases_and_choices_are_spelled_once():
    assert choices.backend_name('torch') == 'pytorch'
    assert choices.backend_name('tensorrt') == 'tensorrt'
    with pytest.raises(InvalidValueError, match="unknown backend 'openvino'"):
        choices.backend_name('openvino')
    with pytest.raises(InvalidValueError, match="precision must be one of fp32, fp16, int8"):
        choices.check_choice('precision', 'fp8', choices.PRECISIONS)
    # The node's parameter table and the command line take the same values.
    from seg_perception.commands import _args
    from seg_perception.ros import params
    assert set(params.BACKENDS) == set(choices.BACKENDS) | set(choices.BACKEND_ALIASES)
    assert params.RUN_PRECISIONS is choices.RUN_PRECISIONS
    parser = _args.argparse.ArgumentParser()
    _args.add_runtime_options(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(['--backend', 'openvino'])
    assert parser.parse_args(['--backend', 'pytorch']).backend == 'pytorch'


def test_more_threads_than_cpus_are_capped_with_a_warning(caplog):
    from seg_perception.runtime.onnxruntime_backend import allowed_cpu_count, inference_threads
    with caplog.at_level(logging.WARNING):
        assert inference_threads(1000) == allowed_cpu_count()
    assert '1000 asked' in caplog.text
    assert inference_threads(1) == 1
    assert 1 <= inference_threads(None) <= allowed_cpu_count()
