"""The model registry: built-in architectures by name, and networks registered for a while."""
import functools

import pytest
from tiny_seg_model import TinySegmenter

from seg_perception import models
from seg_perception.errors import InvalidValueError, UnknownNameError

NAME = 'registry_test_network'


def test_registered_builds_by_name_inside_the_block_only():
    before = models.list_models()
    with models.registered(NAME, TinySegmenter) as name:
        assert name == NAME
        assert models.list_models() == sorted(before + [NAME])
        model = models.build_model(NAME, 3, width=4)
        assert isinstance(model, TinySegmenter) and model.num_classes == 3
    assert models.list_models() == before
    with pytest.raises(UnknownNameError, match=f'unknown architecture {NAME!r}'):
        models.build_model(NAME, 3)


def test_registered_takes_the_name_away_when_the_block_raises():
    before = models.list_models()
    with pytest.raises(RuntimeError, match='inside the block'):
        with models.registered(NAME, TinySegmenter):
            raise RuntimeError('inside the block')
    assert models.list_models() == before


def test_a_name_held_by_another_builder_is_an_error_and_stays_as_it_was():
    before = models.list_models()
    with pytest.raises(InvalidValueError, match="model 'unet' registered twice"):
        with models.registered('unet', TinySegmenter):
            pytest.fail('the block ran although the name was taken')
    assert models.list_models() == before
    assert not isinstance(models.build_model('unet', 2, base_width=4, depth=2), TinySegmenter)
    other = functools.partial(TinySegmenter, width=4)
    with models.registered(NAME, TinySegmenter):
        with pytest.raises(InvalidValueError, match=f'model {NAME!r} registered twice'):
            with models.registered(NAME, other):
                pass
        assert models.build_model(NAME, 2).stem[0].out_channels == 8      # still the first
    assert models.list_models() == before


def test_the_same_builder_nests_and_the_outermost_block_removes_it():
    before = models.list_models()
    with models.registered(NAME, TinySegmenter):
        with models.registered(NAME, TinySegmenter):
            pass
        assert NAME in models.list_models()
    assert models.list_models() == before


def test_registered_removes_only_its_own_entry():
    before = models.list_models()
    with models.registered(NAME, TinySegmenter):
        models.register_model(NAME + '_kept')(TinySegmenter)
    try:
        assert models.list_models() == sorted(before + [NAME + '_kept'])
    finally:
        models.unregister_model(NAME + '_kept')
    assert models.list_models() == before


def test_register_model_accepts_the_same_builder_again_but_not_another():
    try:
        models.register_model(NAME)(TinySegmenter)
        models.register_model(NAME)(TinySegmenter)
        with pytest.raises(InvalidValueError, match=f'model {NAME!r} registered twice'):
            models.register_model(NAME)(functools.partial(TinySegmenter, width=4))
        with pytest.raises(InvalidValueError, match='not callable'):
            models.register_model(NAME + '_bad')('not a builder')
    finally:
        models.unregister_model(NAME)
    assert NAME not in models.list_models() and NAME + '_bad' not in models.list_models()


def test_unregistering_an_unknown_name_is_an_error():
    before = models.list_models()
    with pytest.raises(UnknownNameError, match=f'cannot unregister {NAME!r}'):
        models.unregister_model(NAME)
    assert models.list_models() == before
