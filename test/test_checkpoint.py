"""Checkpoints: atomic round trip, weights_only loading, and a clear error for each bad file."""
import builtins
import os
import pickle

import numpy as np
import pytest
import torch
from tiny_seg_model import TINY_NAME, seeded_tiny, tiny_info

from seg_perception.models.checkpoint import (CHECKPOINT_FORMAT, CheckpointError,
                                              build_model_from_checkpoint, load_checkpoint,
                                              make_checkpoint, save_checkpoint)

EXECUTED = []


def _record_execution(*args):
    EXECUTED.append(args)
    return args


class CodeOnLoad:
    """Unpickling this calls a function: what weights_only=True must refuse."""

    def __reduce__(self):
        return (_record_execution, ('payload ran',))


class ShellOnLoad:
    """Unpickling this runs a shell command (os.system) that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class EvalOnLoad:
    """Unpickling this evaluates Python source (builtins.eval) that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f'open({str(self.marker)!r}, "w").close()',))


@pytest.fixture
def saved(tmp_path, tiny_name):
    """(path, model, info) of a saved tiny checkpoint."""
    model = seeded_tiny(width=6)
    info = tiny_info(width=6)
    path = str(tmp_path / 'tiny.pt')
    save_checkpoint(path, make_checkpoint(model, info, iteration=42,
                                          optimizer={'lr': torch.tensor(0.01)}))
    return path, model, info


def test_round_trip_rebuilds_the_same_model(saved):
    path, model, info = saved
    loaded = load_checkpoint(path)
    assert loaded['format'] == CHECKPOINT_FORMAT
    assert loaded['iteration'] == 42
    assert float(loaded['optimizer']['lr']) == pytest.approx(0.01)

    rebuilt, rebuilt_info = build_model_from_checkpoint(
        path, expect_architecture=TINY_NAME, expect_num_classes=info.num_classes)
    assert rebuilt_info == info
    assert not rebuilt.training
    images = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), model(images))
    for key, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor), key


def test_build_from_an_already_loaded_dict(saved):
    path, model, info = saved
    rebuilt, rebuilt_info = build_model_from_checkpoint(load_checkpoint(path))
    assert rebuilt_info.arch_config == {'width': 6}
    assert sum(p.numel() for p in rebuilt.parameters()) == \
        sum(p.numel() for p in model.parameters())


def test_rebuilding_switches_pretrained_weights_off(tmp_path, tiny_name):
    # The tiny builder raises when asked for pretrained weights, as a download would.
    model = seeded_tiny()
    path = tmp_path / 'pretrained.pt'
    save_checkpoint(path, make_checkpoint(model, tiny_info(pretrained=True)))
    rebuilt, info = build_model_from_checkpoint(path)
    assert info.arch_config == {'pretrained': True}
    assert isinstance(rebuilt, type(model))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, tiny_name, monkeypatch):
    model, info = seeded_tiny(), tiny_info()
    path = tmp_path / 'atomic.pt'
    save_checkpoint(path, make_checkpoint(model, info, iteration=1))
    assert os.listdir(tmp_path) == ['atomic.pt']

    def crash_half_way(obj, stream, *args, **kwargs):
        stream.write(b'PK\x03\x04 half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crash_half_way)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(path, make_checkpoint(model, info, iteration=2))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['atomic.pt']
    assert load_checkpoint(path)['iteration'] == 1


def test_save_refuses_what_weights_only_cannot_load(tmp_path, tiny_name):
    model, info = seeded_tiny(), tiny_info()
    path = tmp_path / 'refused.pt'
    with pytest.raises(TypeError, match=r"\['rng'\]\[1\].*ndarray.*torch.from_numpy"):
        save_checkpoint(path, make_checkpoint(model, info, rng=('MT19937', np.zeros(3))))
    with pytest.raises(TypeError, match=r"\['payload'\].*CodeOnLoad"):
        save_checkpoint(path, make_checkpoint(model, info, payload=CodeOnLoad()))
    assert not path.exists()
    with pytest.raises(ValueError, match='lacks model_info'):
        save_checkpoint(path, {'model': model.state_dict()})
    # numpy scalars (a metric, say) are stored as plain Python numbers
    save_checkpoint(path, make_checkpoint(model, info, best_miou=np.float32(0.5)))
    best = load_checkpoint(path)['best_miou']
    assert type(best) is float and best == 0.5


def test_load_uses_weights_only_and_runs_no_pickled_code(tmp_path, tiny_name):
    model, info = seeded_tiny(), tiny_info()
    path = tmp_path / 'malicious.pt'
    state = make_checkpoint(model, info)
    state['payload'] = CodeOnLoad()
    torch.save(state, path)               # bypasses save_checkpoint's checks
    EXECUTED.clear()
    with pytest.raises(CheckpointError, match='malicious.pt.*could run code'):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match='could run code'):
        build_model_from_checkpoint(path)
    assert EXECUTED == []


@pytest.mark.parametrize('payload, name', [(ShellOnLoad, 'system'), (EvalOnLoad, 'eval')])
@pytest.mark.parametrize('container', ['torch.save', 'legacy pickle'])
def test_code_executing_checkpoint_is_refused_as_such(tmp_path, tiny_name, payload, name,
                                                      container):
    marker = tmp_path / 'payload-ran'
    state = make_checkpoint(seeded_tiny(), tiny_info())
    state['payload'] = payload(marker)
    path = tmp_path / 'malicious.pt'
    if container == 'torch.save':
        torch.save(state, path)
    else:
        with open(path, 'wb') as stream:       # a bare pickle, as torch < 1.6 wrote them
            pickle.dump({'payload': payload(marker)}, stream, protocol=2)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert not marker.exists()
    assert message.startswith(f'{path} asks to run code when loaded (pickle global ')
    assert name in message and 'refused' in message and '\n' not in message
    assert 'corrupt' not in message and 'weights_only' not in message


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*nowhere.pt'):
        load_checkpoint(tmp_path / 'nowhere.pt')
    with pytest.raises(CheckpointError, match='is not a file'):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
def test_corrupt_or_truncated_file_names_the_file(saved, damage):
    path = saved[0]
    data = open(path, 'rb').read()
    replacement = {'truncated': data[:len(data) // 2],
                   'garbage': bytes(range(256)) * 8,
                   'empty': b''}[damage]
    with open(path, 'wb') as stream:
        stream.write(replacement)
    with pytest.raises(CheckpointError, match=r'tiny\.pt is corrupt or truncated') as caught:
        load_checkpoint(path)
    assert 'weights_only' not in str(caught.value) and 'run code' not in str(caught.value)


def test_file_that_is_not_a_seg_perception_checkpoint(tmp_path):
    path = tmp_path / 'bare_state_dict.pt'
    torch.save(seeded_tiny().state_dict(), path)
    with pytest.raises(CheckpointError, match='bare_state_dict.pt is not a seg_perception '
                                              'checkpoint'):
        load_checkpoint(path)
    other_version = tmp_path / 'future.pt'
    torch.save({'format': 'seg_perception/checkpoint-9', 'model_info': {}, 'model': {}},
               other_version)
    with pytest.raises(CheckpointError, match="format 'seg_perception/checkpoint-9'"):
        load_checkpoint(other_version)
    with pytest.raises(CheckpointError, match='not a seg_perception checkpoint'):
        build_model_from_checkpoint({'model': {}})


def test_wrong_architecture_or_class_count(saved):
    path = saved[0]
    with pytest.raises(CheckpointError,
                       match=f'tiny.pt holds a {TINY_NAME} model, expected deeplabv3plus'):
        build_model_from_checkpoint(path, expect_architecture='deeplabv3plus')
    with pytest.raises(CheckpointError, match='tiny.pt predicts 11 classes, expected 19'):
        build_model_from_checkpoint(path, expect_num_classes=19)


def test_unknown_architecture(tmp_path, tiny_name):
    state = make_checkpoint(seeded_tiny(), tiny_info())
    state['model_info']['architecture'] = 'no_such_net'
    with pytest.raises(CheckpointError, match="unknown architecture 'no_such_net'"):
        build_model_from_checkpoint(state)


def test_weights_that_do_not_fit_name_the_first_mismatch(saved):
    path = saved[0]
    state = load_checkpoint(path)
    state['model']['head.weight'] = torch.zeros(11, 7, 1, 1)
    with pytest.raises(CheckpointError, match=r"'head.weight' has shape \(11, 7, 1, 1\), "
                                              r"the model expects \(11, 6, 1, 1\)"):
        build_model_from_checkpoint(state)

    state = load_checkpoint(path)
    del state['model']['body.1.running_var']
    with pytest.raises(CheckpointError, match="missing key 'body.1.running_var'"):
        build_model_from_checkpoint(state)

    state = load_checkpoint(path)
    state['model']['extra.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        build_model_from_checkpoint(state)

    # an arch_config the architecture does not take
    state = load_checkpoint(path)
    state['model_info']['arch_config'] = {'width': 6, 'depth': 3}
    with pytest.raises(CheckpointError, match="cannot rebuild .* arch_config.*depth"):
        build_model_from_checkpoint(state)


def test_weights_saved_from_a_wrapped_model_load(saved):
    path, model, _ = saved
    state = load_checkpoint(path)
    state['model'] = {f'module.{k}': v for k, v in state['model'].items()}
    rebuilt, _ = build_model_from_checkpoint(state)
    assert torch.equal(rebuilt.head.weight, model.head.weight)
