"""A prelude for scripts run in a fresh interpreter where torch cannot be imported.

That is the vehicle computer: numpy, OpenCV and onnxruntime (or TensorRT) only.
Export-only packages (onnx, onnxscript) and training ones (timm, torchvision) are
blocked too, so an accidental import anywhere on the runtime path fails the test.
"""
import textwrap

BLOCK_TORCH = textwrap.dedent('''
    import importlib.abc, sys

    BLOCKED = {'torch', 'torchvision', 'timm', 'onnx', 'onnxscript'}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError(f'No module named {name!r} (blocked by the test)')
            return None

    sys.meta_path.insert(0, NotInstalled())
''')

# `seg-perception ARGS...` in that interpreter; prints which blocked modules got loaded.
NO_TORCH_CLI = BLOCK_TORCH + textwrap.dedent('''
    from seg_perception import cli
    code = cli.main(sys.argv[1:])
    print('BLOCKED-LOADED', sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))
    sys.exit(code)
''')
