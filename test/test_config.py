"""Training configs: shipped files, key=value overrides, and errors that name the bad key."""
import glob
import os

import pytest
import yaml

from seg_perception.config import ConfigError, apply_overrides, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(REPO, 'config', 'train', '*.yaml')))

MINIMAL = {'model': {'architecture': 'deeplabv3plus'},
           'data': {'dataset': 'camvid', 'root': '/data/camvid'},
           'schedule': {'iterations': 10},
           'deploy': {'input_size': [360, 480]}}


def test_every_dataset_has_a_shipped_config():
    names = {os.path.basename(p)[:-5] for p in SHIPPED}
    assert {'camvid', 'cityscapes', 'bdd100k_semseg', 'bdd100k_drivable',
            'apolloscape'} <= names


@pytest.mark.parametrize('path', SHIPPED, ids=os.path.basename)
def test_shipped_config_is_valid_and_documents_its_recipe(path):
    from seg_perception.data import label_space_for_config
    from seg_perception.training.losses import build_loss
    from seg_perception.models import list_models

    config = load_config(path)
    assert config['model']['architecture'] in list_models()
    space = label_space_for_config(config['data'])
    weights = [1.0] * space.num_classes
    build_loss(config['loss'], space.num_classes, space.ignore_index, class_weights=weights)
    assert config['optimizer']['name'] == 'sgd' and config['optimizer']['momentum'] == 0.9
    assert config['schedule']['policy'] == 'poly' and config['schedule']['power'] == 0.9
    with open(path, encoding='utf-8') as stream:
        text = stream.read().lower()
    assert 'recipe' in text, f'{path} must say where its recipe comes from'


def test_camvid_config_trains_the_default_model():
    config = load_config(os.path.join(REPO, 'config', 'train', 'camvid.yaml'))
    model = config['model']
    assert model['architecture'] == 'deeplabv3plus'
    assert model['backbone'] == 'efficientnet_lite0' and model['pretrained'] is True
    assert model['output_stride'] == 16 and model['decoder'] == 'light'
    assert config['deploy']['input_size'] == [360, 480]
    assert config['data']['root'].endswith(os.path.join('shared', 'data', 'camvid'))
    assert os.path.isabs(config['data']['root'])


def test_defaults_fill_every_section():
    config = load_config(base=MINIMAL)
    assert config['train']['batch_size'] == 8 and config['train']['amp'] == 'auto'
    assert config['optimizer']['lr'] == 0.01 and config['schedule']['power'] == 0.9
    assert config['loss'] == {}


def test_overrides_parse_yaml_values_and_nested_keys():
    config = load_config(base=MINIMAL, overrides=[
        'train.batch_size=4', 'optimizer.weight_decay=5e-4', 'train.channels_last=true',
        'train.amp=off', 'data.augment.crop=[256, 320]', 'schedule.iterations=null',
        'schedule.epochs=3', 'loss.aux_weight=0.5', 'data.root=/elsewhere'])
    assert config['train']['batch_size'] == 4
    assert config['optimizer']['weight_decay'] == pytest.approx(5e-4)
    assert config['train']['channels_last'] is True
    assert config['train']['amp'] == 'off'          # YAML 1.1 reads "off" as False
    assert config['data']['augment']['crop'] == [256, 320]
    assert config['schedule'] == dict(config['schedule'], iterations=None, epochs=3)
    assert config['loss']['aux_weight'] == 0.5
    assert config['data']['root'] == '/elsewhere'


def test_overrides_do_not_modify_the_input():
    base = {'train': {'batch_size': 8}}
    changed = apply_overrides(base, ['train.batch_size=2'])
    assert base['train']['batch_size'] == 8 and changed['train']['batch_size'] == 2


def test_relative_data_root_is_found_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # not the repository
    config = load_config(base=dict(MINIMAL, data={'dataset': 'camvid', 'root': 'config'}))
    assert config['data']['root'] == os.path.join(REPO, 'config')


@pytest.mark.parametrize('override, message', [
    ('train.bacth_size=4', 'unknown config key train.bacth_size (did you mean train.batch_size?)'),
    ('train.batch_size=eight', "train.batch_size must be an integer, got 'eight'"),
    ('train.batch_size=0', 'train.batch_size must be >= 1'),
    ('train.batch_size=2.5', 'train.batch_size must be an integer'),
    ('train.amp=fp8', "train.amp must be one of auto, off, fp16, bf16, got 'fp8'"),
    ('optimizer.lr=0', 'optimizer.lr must be > 0.0'),
    ('optimizer.name=rmsprop', 'optimizer.name must be one of sgd, adamw'),
    ('optimizer.momentum=1.5', 'optimizer.momentum must be <= 1.0'),
    ('train.channels_last=maybe', 'train.channels_last must be true or false'),
    ('deploy.input_size=[360]', 'deploy.input_size must be [height, width]'),
    ('deploy.input_size=null', 'deploy.input_size is required'),
    ('schedule.epochs=5', 'give exactly one of schedule.iterations and schedule.epochs'),
    ('schedule.iterations=null', 'give exactly one of schedule.iterations and schedule.epochs'),
    ('train.accumulate=3', 'train.batch_size (8) must be a multiple of train.accumulate (3)'),
    ('model.architecture=null', 'model.architecture is required'),
    ('loss.aux_weight=-1', 'loss.aux_weight must be >= 0.0'),
    ('trian.seed=1', 'unknown config key trian (did you mean train?)'),
    ('train.batch_size.x=1', "override 'train.batch_size.x=1': train.batch_size is 8, "
                             'not a section'),
    ('train.batch_size', "override 'train.batch_size' is not key=value"),
    ('train..seed=1', 'empty name in the dotted key'),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(base=MINIMAL, overrides=[override])
    assert message in str(error.value)


def test_missing_config_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'config file not found: .*nope\.yaml.*camvid'):
        load_config(str(tmp_path / 'nope.yaml'))


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('model: [unclosed\n')
    with pytest.raises(ConfigError, match='broken.yaml is not valid YAML'):
        load_config(str(path))


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / 'list.yaml'
    path.write_text('- model\n- data\n')
    with pytest.raises(ConfigError, match='list.yaml must hold a mapping of sections, got a list'):
        load_config(str(path))


def test_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match='optimizer must be a mapping'):
        load_config(base=dict(MINIMAL, optimizer=0.01))


def test_no_config_at_all_is_an_error():
    with pytest.raises(ConfigError, match='no config given'):
        load_config()


@pytest.mark.parametrize('override, message', [
    ('data.eval_resise=[360,480]', 'data.eval_resise (did you mean data.eval_resize?)'),
    ('data.skip_corupt=true', 'data.skip_corupt (did you mean data.skip_corrupt?)'),
    ('data.drivable_clases=[road]', 'data.drivable_clases (did you mean data.drivable_classes?)'),
    ('data.image_dir=images', 'unknown config key data.image_dir; known keys here: data.dataset'),
    ('model.bakbone=resnet18', 'model.bakbone (did you mean model.backbone?)'),
    ('model.output_strid=8', 'model.output_strid (did you mean model.output_stride?)'),
    ('model.architecture=deeplabv3pls', "model.architecture 'deeplabv3pls' is not an "
                                        'architecture (did you mean deeplabv3plus?)'),
    ('loss.aux_wieght=0.2', 'loss.aux_wieght (did you mean loss.aux_weight?)'),
    ('optimizer.momentun=0.8', 'optimizer.momentun (did you mean optimizer.momentum?)'),
    ('deploy.input_sise=[360,480]', 'deploy.input_sise (did you mean deploy.input_size?)'),
])
def test_train_names_a_misspelt_key_in_one_line(tmp_path, capsys, override, message):
    """Every section's keys are checked before the run folder is made: exit 2, one line."""
    from seg_perception import cli
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(MINIMAL))
    out = tmp_path / 'run'
    assert cli.main(['train', '--config', str(path), '--output', str(out), override]) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert err.strip().splitlines()[-1].startswith('seg-perception train: error: ')
    assert message in err.strip().splitlines()[-1]
    assert not out.exists()


def test_model_keys_follow_a_builder_that_forwards_its_settings():
    from seg_perception.training.config_keys import model_keys
    # unet(num_classes, **config) passes config to UNet: its keyword arguments count
    assert {'base_width', 'depth', 'dropout'} <= set(model_keys('unet'))
    assert model_keys('deeplabv3plus')[:2] == ['architecture', 'backbone']
    assert 'num_classes' not in model_keys('fcn8s')
