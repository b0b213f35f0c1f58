"""Our Cityscapes metrics agree with cityscapesscripts' own pixel-level evaluation.

A tiny Cityscapes-layout val split (32×64 frames, labelIds ground truth) is evaluated
end to end with ``seg-perception evaluate --save-predictions``; the saved trainId
predictions are turned into labelId images and scored by
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling.evaluateImgLists``.
"""
import json
import os

import cv2
import numpy as np
import pytest

from eval_models import palette_info, run_cli, save_palette_checkpoint, write_png
from seg_perception.labels import CITYSCAPES


def cityscapes_fixture(root, count=2, seed=5):
    """A Cityscapes-layout val split of 32×64 frames whose colours encode the prediction."""
    from cityscapesscripts.helpers.labels import labels as cs_labels
    rng = np.random.default_rng(seed)
    # bicycle (labelId 33, trainId 18) is never in the ground truth, only predicted
    label_ids = np.array([label.id for label in cs_labels if 0 <= label.id != 33])
    train_of = {label.id: label.trainId for label in cs_labels if label.id >= 0}
    palette = np.asarray(CITYSCAPES.palette, np.uint8)
    for index in range(count):
        stem = f'lindau_000000_{index:06d}'
        # ground truth: 8×8 blocks of any labelId (evaluated or ignored ones)
        gt = np.kron(rng.choice(label_ids, (4, 8)), np.ones((8, 8), int)).astype(np.uint8)
        # prediction: the block's trainId where it has one, half of the time; else random
        # among a few classes (so some classes are only predicted, some absent entirely)
        pred = np.vectorize(lambda i: train_of[i] if 0 <= train_of[i] < 19 else 0)(gt)
        wrong = rng.random(gt.shape) < 0.5
        pred[wrong] = rng.choice([0, 1, 2, 8, 10, 13, 18], int(wrong.sum()))
        write_png(root / 'leftImg8bit' / 'val' / 'lindau' / f'{stem}_leftImg8bit.png',
                  palette[pred])
        write_png(root / 'gtFine' / 'val' / 'lindau' / f'{stem}_gtFine_labelIds.png', gt)
    return root


def official_scores(gt_files, prediction_files):
    """Run cityscapesscripts' evaluateImgLists with its printing and file output off."""
    import copy

    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    args = copy.copy(official.args)
    args.evalInstLevelScore = False      # needs *_instanceIds.png; not what we compare
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    return official.evaluateImgLists(list(prediction_files), list(gt_files), args)


@pytest.mark.usefixtures('colour_net_name')
def test_cityscapes_metrics_agree_with_cityscapesscripts(tmp_path):
    pytest.importorskip('cityscapesscripts')
    from cityscapesscripts.helpers.labels import trainId2label
    root = cityscapes_fixture(tmp_path / 'cityscapes')
    info = palette_info(CITYSCAPES.class_names, CITYSCAPES.palette,
                        label_space='cityscapes')
    checkpoint = save_palette_checkpoint(tmp_path / 'model.pt', info)
    out = tmp_path / 'eval'
    assert run_cli('--checkpoint', checkpoint, '--dataset', 'cityscapes', '--root', root,
                   '--output', out, '--save-predictions') == 0
    ours = json.loads((out / 'metrics.json').read_text())
    # the saved trainId predictions become labelId images, as the benchmark wants them
    to_label_id = np.zeros(256, np.uint8)
    for train_id in range(19):
        to_label_id[train_id] = trainId2label[train_id].id
    gt_files = sorted(str(p) for p in (root / 'gtFine' / 'val').rglob('*_labelIds.png'))
    prediction_files = []
    for gt_file in gt_files:
        stem = os.path.basename(gt_file)[:-len('_gtFine_labelIds.png')]
        train_ids = cv2.imread(str(out / 'predictions' / f'{stem}_leftImg8bit.png'),
                               cv2.IMREAD_UNCHANGED)
        path = tmp_path / 'results' / f'{stem}_pred_labelIds.png'
        write_png(path, to_label_id[train_ids])
        prediction_files.append(str(path))
    official = official_scores(gt_files, prediction_files)

    evaluated = absent = only_predicted = 0
    for name in CITYSCAPES.class_names:
        theirs, mine = official['classScores'][name], ours['per_class_iou'][name]
        if np.isnan(theirs):
            assert mine is None, name
            absent += 1
        else:
            assert mine == pytest.approx(theirs, abs=1e-6), name
            evaluated += 1
            only_predicted += theirs == 0.0
    assert ours['miou'] == pytest.approx(official['averageScoreClasses'], abs=1e-6)
    # the fixture exercises every case: scored, absent (NaN) and wrong-only classes
    assert evaluated >= 10 and absent >= 1 and only_predicted >= 1
