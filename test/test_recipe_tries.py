"""The recipe tries of issue #24 (config/train/tries/*.yaml): each delta, applied to
config/train/camvid.yaml as benchmarks/default_model_tries.sh applies it (one JSON-valued
override per key), gives a config the trainer accepts, and the driver's default queue names
exactly the tries there are."""
import json
import os
import re

import pytest
import yaml

from seg_perception.config import load_config
from seg_perception.data.transforms import build_transforms
from seg_perception.training.config_keys import check_config_keys
from seg_perception.training.distillation import check_distill_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIES = os.path.join(REPO, 'config', 'train', 'tries')
NAMES = sorted(name[:-len('.yaml')] for name in os.listdir(TRIES) if name.endswith('.yaml'))


def delta(name):
    with open(os.path.join(TRIES, name + '.yaml'), encoding='utf-8') as stream:
        return yaml.safe_load(stream) or {}


@pytest.mark.parametrize('name', NAMES)
def test_each_try_is_a_valid_change_of_the_shipped_recipe(name):
    changes = delta(name)
    assert changes, f'{name}.yaml changes nothing'
    overrides = [f'{key}={json.dumps(value)}' for key, value in changes.items()]
    config = load_config(os.path.join(REPO, 'config', 'train', 'camvid.yaml'), overrides)
    check_config_keys(config)
    for key, value in changes.items():
        node = config
        for part in key.split('.'):
            node = node[part]
        assert node == value, key
    check_distill_section(config['train'].get('distill'))
    build_transforms(config['data'], True, (0.5,) * 3, (0.5,) * 3)     # the augmentation builds


def test_the_driver_queues_every_try_once():
    with open(os.path.join(REPO, 'benchmarks', 'default_model_tries.sh'),
              encoding='utf-8') as stream:
        script = stream.read()
    (queue,) = re.findall(r'TRIES=\$\{TRIES:-"([^"]*)"\}', script)
    queued = queue.split()
    assert sorted(queued) == NAMES and len(set(queued)) == len(queued)
    # a student is queued after its teacher
    for name in queued:
        teacher = (delta(name).get('train.distill') or {}).get('teacher')
        if teacher:
            teacher_run = os.path.basename(os.path.dirname(teacher))
            assert queued.index(teacher_run) < queued.index(name)
