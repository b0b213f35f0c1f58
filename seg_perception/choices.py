"""The vocabulary of runtime choices, spelled once.

Every command-line option, node parameter and backend takes its allowed values from here, so
a new backend or precision is added in one place.
"""
from seg_perception.errors import InvalidValueError

BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'onnxruntime-cpu', 'onnxruntime-cuda',
            'onnxruntime-tensorrt', 'pytorch')
# Other spellings accepted for a backend: the node's parameter has taken 'torch' since its
# first release, and configs in the field use it.
BACKEND_ALIASES = {'torch': 'pytorch'}
PRECISIONS = ('fp32', 'fp16', 'int8')
# What a user may ask to run at: a precision, or 'auto' (the fastest that is safe here: the
# INT8 form beside the model on a CPU with int8 dot-product instructions, fp16 on TensorRT;
# runtime/backends.py). A model file is always one of PRECISIONS.
RUN_PRECISIONS = ('auto',) + PRECISIONS
# Where the labels come out: at the camera's size, or at the network's (cheaper; the runtime
# resizes).
OUTPUT_RESOLUTIONS = ('camera', 'network')


def backend_name(name: str) -> str:
    """The canonical name of a backend (aliases resolved); InvalidValueError if unknown."""
    name = BACKEND_ALIASES.get(name, name)
    if name not in BACKENDS:
        raise InvalidValueError(f'unknown backend {name!r}; choose one of {", ".join(BACKENDS)}')
    return name


def check_choice(what: str, value: str, allowed) -> str:
    """``value`` if it is one of ``allowed``; else InvalidValueError naming ``what``."""
    if value not in allowed:
        raise InvalidValueError(f'{what} must be one of {", ".join(allowed)}; unknown {what} '
                                f'{value!r}')
    return value
