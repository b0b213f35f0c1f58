"""The vehicle path runs with numpy, OpenCV and onnxruntime alone: no torch, no onnx."""
import json
import subprocess
import sys
import textwrap

import numpy as np

import runtime_models as rm
from no_torch import BLOCK_TORCH

# Runs in a fresh interpreter where importing torch (and friends) fails, as on a
# vehicle computer that has only the runtime dependencies installed.
SCRIPT = BLOCK_TORCH + textwrap.dedent('''
    import json
    try:
        import torch  # noqa: F401
        sys.exit('torch is importable: the blocker does not work')
    except ImportError:
        pass

    import numpy as np
    from seg_perception.runtime.pipeline import SegmentationPipeline
    from seg_perception.runtime.backends import create_backend

    model = sys.argv[1]
    frames = [np.load(path) for path in sys.argv[2:]]
    seg = SegmentationPipeline(model, backend='auto', want_color=True, want_confidence=True,
                               keep_ego_region=True, fill_holes_px=10)
    results = seg.process(frames, ['rgb8', 'bgr8'])
    print(json.dumps({
        'backend': seg.describe()['name'],
        'labels': [r.labels.tolist() for r in results],
        'drivable': [r.drivable_mask.tolist() for r in results],
        'color_shapes': [list(r.color.shape) for r in results],
        'stages': sorted(results[0].timings),
        'blocked_loaded': sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED),
    }))
''')


def test_pipeline_runs_where_torch_and_onnx_cannot_be_imported(tmp_path):
    model = rm.exported('network', with_confidence=True)
    frames = [rm.painted_frame(60, 100), rm.painted_frame(45, 80)[:, :, ::-1].copy()]
    paths = []
    for index, frame in enumerate(frames):
        paths.append(str(tmp_path / f'frame{index}.npy'))
        np.save(paths[-1], frame)
    done = subprocess.run([sys.executable, '-c', SCRIPT, model] + paths,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['blocked_loaded'] == []
    assert report['backend'] == 'onnxruntime'
    assert report['color_shapes'] == [[60, 100, 3], [45, 80, 3]]
    assert {'convert', 'infer', 'postprocess', 'total'} <= set(report['stages'])
    # Same answers as in this (torch-importing) process.
    from seg_perception.runtime.pipeline import SegmentationPipeline
    here = SegmentationPipeline(model, backend='onnxruntime', keep_ego_region=True,
                                fill_holes_px=10).process(frames, ['rgb8', 'bgr8'])
    for ours, labels, drivable in zip(here, report['labels'], report['drivable']):
        np.testing.assert_array_equal(ours.labels, np.array(labels, np.uint8))
        np.testing.assert_array_equal(ours.drivable_mask, np.array(drivable, np.uint8))
