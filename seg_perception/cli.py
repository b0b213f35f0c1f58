"""``seg-perception``: one entry point, one subcommand per job.

Subcommands live in their own modules and are imported only when chosen, so
``seg-perception demo`` on a vehicle never imports torch. Each module provides
``configure_parser(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from seg_perception import __version__
from seg_perception.errors import SegPerceptionError

# name -> one-line help; the command lives in seg_perception.commands.<name with _ for ->
COMMANDS = {
    'models': 'list architectures with parameter counts',
    'export': 'export a checkpoint to the deployable ONNX graph',
    'import-model': 'wrap a foreign ONNX segmentation graph by its contract',
    'train': 'train a model from a config file',
    'evaluate': 'evaluate a checkpoint or ONNX model on a dataset',
    'class-weights': 'compute class weights from training labels',
    'quantize': 'INT8 post-training quantisation (QDQ)',
    'build-engine': 'build a TensorRT engine from ONNX',
    'bench': 'benchmark the inference pipeline',
    'bag-eval': 'run a recorded bag through the pipeline',
    'demo': 'run the bundled sample bag through the default model',
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='seg-perception',
        description='Camera semantic segmentation for autonomous vehicles.')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Split "[global options] COMMAND [command options]" ourselves, so that only the
    # chosen command's module is imported.
    index = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    if index is None:
        args = top.parse_args(argv)
        top.print_help()
        return 0 if not argv else 2
    global_args = top.parse_args(argv[:index])
    name = argv[index]
    module_name = 'seg_perception.commands.' + name.replace('-', '_')
    help_text = COMMANDS[name]
    logging.basicConfig(level=logging.DEBUG if global_args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A missing piece of seg_perception itself is a bug, not a missing extra.
        if (exc.name or '').startswith('seg_perception'):
            raise
        print(f'seg-perception {name}: needs a package that is not installed: {exc}. '
              'Install the extra it belongs to, e.g. pip install "seg_perception[train]".',
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f'seg-perception {name}', description=help_text)
    module.configure_parser(parser)
    args = parser.parse_args(argv[index + 1:])
    try:
        return int(module.run(args) or 0)
    except (SegPerceptionError, OSError) as exc:
        # A problem the user can fix (a bad value, a missing or unwritable file): one line.
        # Anything else is a bug in seg_perception and keeps its traceback.
        print(f'seg-perception {name}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'seg-perception {name}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
