"""``seg-perception import-model``: a foreign ONNX segmentation graph, wrapped by its contract.

The work is done by :func:`seg_perception.deploy.import_model.import_model`; this is its
shell: it reads the contract and the check frame (``--frame``, else the first frame of the
bundled sample bag) and prints what was written and how well it agrees.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from seg_perception.choices import OUTPUT_RESOLUTIONS
from seg_perception.deploy.contract import load_contract
from seg_perception.deploy.import_model import MIN_AGREEMENT, import_model
from seg_perception.errors import CommandError

SAMPLE_TOPIC = '/camera/dash/image_raw/compressed'


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-perception import-model``."""
    parser.add_argument('foreign', metavar='FOREIGN.onnx', help='the ONNX graph to import')
    parser.add_argument('--contract', required=True, metavar='CONTRACT.yaml',
                        help='how to feed the graph and read its outputs '
                             '(examples: config/contracts/)')
    parser.add_argument('--output', required=True, metavar='MODEL.onnx',
                        help='the deployable ONNX file to write')
    parser.add_argument('--frame', metavar='IMAGE',
                        help='image to compare the wrapped and the foreign graph on '
                             '(default: a frame of the bundled sample bag)')
    parser.add_argument('--output-resolution', choices=OUTPUT_RESOLUTIONS, default='camera',
                        help='labels at camera resolution (bilinear scores) or at network '
                             'resolution (the runtime resizes; not with letterbox)')


def _read_frame(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise CommandError(f'--frame: cannot read an image from {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def sample_frame() -> np.ndarray:
    """The first camera frame of the bundled sample bag, RGB."""
    from seg_perception.commands.demo import sample_bag_path
    from seg_perception.replay.bag_io import open_bag
    from seg_perception.ros.conversions import image_to_rgb
    with open_bag(sample_bag_path()) as bag:
        for _, msgtype, _, raw in bag.messages([SAMPLE_TOPIC]):
            return np.ascontiguousarray(image_to_rgb(bag.deserialize(raw, msgtype)))
    raise CommandError(f'the sample bag has no frame on {SAMPLE_TOPIC}; pass --frame IMAGE')


def run(args: argparse.Namespace) -> int:
    """Import the graph; print the written path, a summary and the agreement."""
    contract = load_contract(args.contract)
    frame = _read_frame(args.frame) if args.frame else sample_frame()
    result = import_model(args.foreign, contract, args.output, frame,
                          output_resolution=args.output_resolution)
    info = result.info
    print(args.output)
    print(f'  classes        {info.num_classes} ({info.label_space or "custom"}): '
          f'{", ".join(info.class_names)}')
    print(f'  network input  {info.input_size[0]}x{info.input_size[1]}, '
          f'{contract.input.layout} {contract.input.color}, {contract.input.resize}')
    extras = [f'masks ({", ".join(info.masks)})'] if info.masks else []
    if info.probabilities:
        extras.append(f'probabilities ({", ".join(info.probabilities)})')
    print('  graph          images uint8 NxHxWx3 RGB -> labels uint8'
          + ''.join(f', {e}' for e in extras) + f' at {info.output_resolution} resolution')
    checked = ', '.join(f'{name} {value:.2%}' for name, value in result.agreement.items())
    print(f'  check          the wrapped graph equals the foreign one on a '
          f'{frame.shape[1]}x{frame.shape[0]} frame: {checked} of pixels '
          f'(at least {MIN_AGREEMENT:.1%} needed)')
    return 0
