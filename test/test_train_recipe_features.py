"""The optional parts of a training recipe (issue #24): a weight average (train.ema_decay),
training on several splits (data.train_splits), full-frame crops at the end
(train.full_frame_epochs), and a training-only aux head that export leaves out.

Each trains the tiny test network on test_training's synthetic CamVid for a few steps.
"""
import os
import sys

import onnx
import pytest
import torch
from torch.utils.data import DataLoader

from seg_perception.config import ConfigError
from seg_perception.data import build_dataset, build_transforms
from seg_perception.deploy.export import export_onnx
from seg_perception.evaluation.metrics import ConfusionMatrix
from seg_perception.labels import CAMVID
from seg_perception.model_info import ModelInfo
from seg_perception.models import build_model
from seg_perception.models.checkpoint import (CheckpointError, build_model_from_checkpoint,
                                              load_checkpoint, make_checkpoint)
from seg_perception.training.distillation import PixelDistillation
from seg_perception.training.run import train

TEST_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TEST_DIR)
import tiny_seg_model  # noqa: E402
from test_training import tiny_config, write_camvid  # noqa: E402

TINY = tiny_seg_model.TINY_NAME


@pytest.fixture(scope='module')
def camvid_root(tmp_path_factory):
    return write_camvid(tmp_path_factory.mktemp('camvid') / 'camvid')


def val_miou(model, config):
    """The val mIoU of ``model`` computed here, outside the trainer."""
    mean, std = model.normalization() if callable(getattr(model, 'normalization', None)) \
        else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    data = config['data']
    dataset = build_dataset(data, 'val', build_transforms(data, False, mean, std))
    matrix = ConfusionMatrix(CAMVID.num_classes, CAMVID.ignore_index)
    model.eval()
    with torch.no_grad():
        for images, masks in DataLoader(dataset, batch_size=4):
            matrix.update(model(images).argmax(1), masks)
    return matrix.summary(CAMVID.class_names, CAMVID.drivable_ids)['miou']


def test_weight_average_is_evaluated_checkpointed_and_deployed(camvid_root, tiny_name, tmp_path):
    out = str(tmp_path / 'run')
    config = tiny_config(camvid_root, train={'ema_decay': 0.9, 'eval_every': 12, 'amp': 'off'})
    summary = train(config, out)
    last = load_checkpoint(os.path.join(out, 'last.pt'))
    assert last['ema'].keys() == last['model'].keys()
    assert any(not torch.equal(last['ema'][k], last['model'][k])
               for k in last['model'] if last['model'][k].is_floating_point())
    model, _ = build_model_from_checkpoint(os.path.join(out, 'last.pt'))
    for key, value in model.state_dict().items():
        assert torch.equal(value, last['ema'][key]), key
    # the one evaluation (at the end) scored the average, and best.pt deploys it
    assert summary['best_miou'] == pytest.approx(val_miou(model, config), abs=1e-6)
    best = load_checkpoint(os.path.join(out, 'best.pt'))
    assert all(torch.equal(best['ema'][k], last['ema'][k]) for k in last['ema'])
    log = open(os.path.join(out, 'train.log')).read()
    assert 'weight average (train.ema_decay 0.9)' in log


def test_weight_average_resumes_exactly(camvid_root, tiny_name, tmp_path):
    settings = {'ema_decay': 0.95, 'eval_every': 100}
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    train(tiny_config(camvid_root, train=settings), whole)
    train(tiny_config(camvid_root, train=dict(settings, max_iterations_this_run=5)), parts)
    train(tiny_config(camvid_root, train=settings), parts,
          resume=os.path.join(parts, 'last.pt'))
    a, b = load_checkpoint(whole + '/last.pt'), load_checkpoint(parts + '/last.pt')
    for key in a['ema']:
        assert torch.equal(a['ema'][key], b['ema'][key]), key


def test_resuming_a_run_without_an_average_starts_one_from_it(camvid_root, tiny_name, tmp_path):
    out = str(tmp_path / 'run')
    train(tiny_config(camvid_root, train={'max_iterations_this_run': 3}), out)
    before = load_checkpoint(os.path.join(out, 'last.pt'))['model']
    train(tiny_config(camvid_root, train={'ema_decay': 0.9, 'max_iterations_this_run': 1}),
          out, resume=os.path.join(out, 'last.pt'))
    log = open(os.path.join(out, 'train.log')).read()
    assert 'holds no weight average: train.ema_decay starts one from its weights' in log
    after = load_checkpoint(os.path.join(out, 'last.pt'))
    # one step (the 4th of the run) from the old weights, at the warmed-up decay
    decay = min(0.9, 1 - (1 + 3) ** (-2 / 3))
    key = 'head.weight'
    expected = decay * before[key] + (1 - decay) * after['model'][key]
    torch.testing.assert_close(after['ema'][key], expected)


def test_ema_decay_must_be_a_fraction(camvid_root):
    with pytest.raises(ConfigError, match='train.ema_decay must be > 0.0'):
        tiny_config(camvid_root, train={'ema_decay': 0})


def test_training_on_train_and_val_has_no_held_out_validation(camvid_root, tiny_name, tmp_path):
    out = str(tmp_path / 'run')
    config = tiny_config(camvid_root, data={'train_splits': ['train', 'val']},
                         schedule={'iterations': 8}, train={'eval_every': 2})
    summary = train(config, out)
    assert summary['finished'] and summary['best_miou'] is None
    assert not os.path.exists(os.path.join(out, 'best.pt'))
    state = load_checkpoint(os.path.join(out, 'last.pt'))
    assert state['epoch'] == 2                      # 12 + 4 frames: 4 steps of 4 per epoch
    log = open(os.path.join(out, 'train.log')).read()
    assert '16 train / no held-out validation images' in log
    assert 'no held-out validation: data.train_splits' in log and ': val mIoU' not in log
    assert 'best val mIoU none (no held-out validation)' in log


def test_joined_splits_read_every_split_in_order(camvid_root):
    data = {'dataset': 'camvid', 'root': camvid_root, 'train_splits': ['train', 'val']}
    joined = build_dataset(data, 'train')
    train_set = build_dataset({'dataset': 'camvid', 'root': camvid_root}, 'train')
    val_set = build_dataset({'dataset': 'camvid', 'root': camvid_root}, 'val')
    assert len(joined) == len(train_set) + len(val_set) == 16
    assert joined.split == 'train+val' and joined.label_space is CAMVID
    assert joined.samples == train_set.samples + val_set.samples
    assert (joined.read_label(12) == val_set.read_label(0)).all()
    assert (joined[3][1] == train_set[3][1]).all()


@pytest.mark.parametrize('splits, message', [
    (['train', 'train'], "names the split 'train' twice"),
    ([], 'must be a list of split names'),
    ('train', 'must be a list of split names'),
])
def test_bad_train_splits_are_named(camvid_root, splits, message):
    data = {'dataset': 'camvid', 'root': camvid_root, 'train_splits': splits}
    with pytest.raises(ValueError, match=message):
        build_dataset(data, 'train')


def test_class_weights_are_counted_over_the_joined_splits(camvid_root, tiny_name, tmp_path):
    out = str(tmp_path / 'run')
    train(tiny_config(camvid_root, data={'train_splits': ['train', 'val']},
                      loss={'class_weighting': 'median_freq'},
                      schedule={'iterations': 1}), out)
    log = open(os.path.join(out, 'train.log')).read()
    assert 'class weights (median_freq, counted)' in log
    cache = open(os.path.join(out, 'class_weights.json')).read()
    assert 'camvid/train+val/median_freq' in cache


def test_last_epochs_train_on_full_frames(camvid_root, tiny_name, tmp_path, monkeypatch):
    seen = []
    forward = tiny_seg_model.TinySegmenter.forward_padded

    def recording(self, x):
        if self.training:
            seen.append(tuple(x.shape[-2:]))
        return forward(self, x)
    monkeypatch.setattr(tiny_seg_model.TinySegmenter, 'forward_padded', recording)
    out = str(tmp_path / 'run')
    # 12 frames in batches of 4: 3 steps per epoch, 4 epochs; the last one on 48×64 frames
    train(tiny_config(camvid_root, train={'full_frame_epochs': 1}), out)
    assert seen == [(32, 32)] * 9 + [(48, 64)] * 3
    log = open(os.path.join(out, 'train.log')).read()
    assert 'from epoch 3 on, crops are whole 48x64 frames' in log


def test_aux_head_is_left_out_of_the_deployed_network(camvid_root, tiny_name, tmp_path):
    plain, with_aux = str(tmp_path / 'plain'), str(tmp_path / 'aux')
    train(tiny_config(camvid_root, schedule={'iterations': 2}), plain)
    train(tiny_config(camvid_root, model={'aux': True}, loss={'aux_weight': 0.4},
                      schedule={'iterations': 2}), with_aux)
    assert any(k.startswith('aux_head.') for k in load_checkpoint(with_aux + '/last.pt')['model'])
    graphs = []
    for run in (plain, with_aux):
        model, info = build_model_from_checkpoint(os.path.join(run, 'last.pt'))
        assert model.aux_head is None and not info.arch_config.get('aux')
        path = os.path.join(run, 'model.onnx')
        export_onnx(model, info, path, exporter='legacy')
        graphs.append(onnx.load(path).graph)
    nodes = [[(n.op_type, list(n.input), list(n.output)) for n in g.node] for g in graphs]
    weights = [[(w.name, tuple(w.dims)) for w in g.initializer] for g in graphs]
    assert nodes[0] == nodes[1] and weights[0] == weights[1]


def test_deeplab_checkpoint_rebuilds_without_its_aux_head():
    model = build_model('deeplabv3plus', CAMVID.num_classes, aux=True)
    info = ModelInfo.from_label_space('deeplabv3plus', CAMVID, (64, 64),
                                      arch_config={'aux': True})
    rebuilt, rebuilt_info = build_model_from_checkpoint(make_checkpoint(model, info))
    assert rebuilt.aux_head is None and rebuilt_info.arch_config == {'aux': False}
    model.eval()
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(rebuilt(image), model(image))


def test_a_weight_average_that_is_not_a_state_dict_is_named(tiny_name):
    model = tiny_seg_model.seeded_tiny()
    state = make_checkpoint(model, tiny_seg_model.tiny_info(), ema=[1, 2])
    with pytest.raises(CheckpointError, match='weight average "ema" is not a state dict'):
        build_model_from_checkpoint(state)


def test_distillation_is_zero_on_the_teachers_own_logits_and_pulls_towards_them(tiny_name):
    teacher = tiny_seg_model.seeded_tiny(1)
    images = torch.rand(2, 3, 16, 16)
    term = PixelDistillation(teacher, weight=2.0, temperature=3.0)
    with torch.no_grad():
        own = teacher.eval()(images)
    assert float(term(images, own)) == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros_like(own, requires_grad=True)
    loss = term(images, {'out': student, 'aux': student})
    loss.backward()
    # KL per pixel, times weight and T², is what a direct computation gives
    p_teacher = torch.softmax(own / 3.0, 1)
    expected = (p_teacher * (p_teacher.log() - torch.log_softmax(student / 3.0, 1))).sum(1)
    expected = 2.0 * 9.0 * float(expected.detach().mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # a step against the gradient brings the student's distribution nearer the teacher's
    with torch.no_grad():
        assert float(term(images, student - 0.5 * student.grad)) < float(loss.detach())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_training_with_a_teacher(camvid_root, tiny_name, tmp_path):
    teacher_run, student_run, plain_run = (str(tmp_path / n) for n in ('t', 's', 'p'))
    train(tiny_config(camvid_root, model={'width': 16}, schedule={'iterations': 3}),
          teacher_run)
    settings = {'amp': 'off', 'eval_every': 100}
    distill = {'teacher': os.path.join(teacher_run, 'last.pt'), 'weight': 1.0}
    train(tiny_config(camvid_root, train=dict(settings, distill=distill)), student_run)
    train(tiny_config(camvid_root, train=settings), plain_run)
    log = open(os.path.join(student_run, 'train.log')).read()
    assert f'distilling from {distill["teacher"]} ({TINY} ), weight 1, temperature 1' in log
    # the same run but for the teacher's term: the weights differ
    with_teacher = load_checkpoint(os.path.join(student_run, 'last.pt'))['model']
    without = load_checkpoint(os.path.join(plain_run, 'last.pt'))['model']
    assert not torch.equal(with_teacher['head.weight'], without['head.weight'])


@pytest.mark.parametrize('section, message', [
    ({'weight': 1.0}, 'train.distill.teacher is required'),
    ({'teacher': 'x.pt', 'temprature': 2}, 'unknown config key train.distill.temprature'),
    ({'teacher': 'x.pt', 'weight': 0}, r'train.distill.weight must be a number > 0'),
    ('x.pt', 'train.distill must be a mapping'),
])
def test_bad_distill_sections_are_named(camvid_root, tiny_name, tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny_config(camvid_root, train={'distill': section}), str(tmp_path / 'run'))
    assert not os.path.exists(tmp_path / 'run')         # refused before anything was made


def test_a_teacher_of_other_classes_is_refused(camvid_root, tiny_name, tmp_path):
    from seg_perception.labels import CITYSCAPES
    from seg_perception.models.checkpoint import save_checkpoint
    path = str(tmp_path / 'teacher.pt')
    info = ModelInfo.from_label_space(TINY, CITYSCAPES, (32, 32), arch_config={})
    save_checkpoint(path, make_checkpoint(tiny_seg_model.TinySegmenter(19), info))
    with pytest.raises(ValueError, match='predicts .*road.*, the network trained here'):
        train(tiny_config(camvid_root, train={'distill': {'teacher': path}}),
              str(tmp_path / 'run'))
