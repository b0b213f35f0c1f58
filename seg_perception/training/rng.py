"""Random-number state: seeding every generator, and capturing and restoring it so that
a resumed run continues the same random streams."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def capture_rng() -> Dict[str, Any]:
    """This process's RNG states as tensors and plain lists (weights_only loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)),
                  'pos': int(position), 'has_gauss': int(has_gauss),
                  'cached_gaussian': float(cached)},
        'python': {'version': int(version), 'state': list(py_state),
                   'gauss_next': gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Undo ``capture_rng``: put every generator back where it was."""
    torch.set_rng_state(state['torch'].cpu().to(torch.uint8))
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].numpy().astype(np.uint32),
                         int(np_state['pos']), int(np_state['has_gauss']),
                         float(np_state['cached_gaussian'])))
    py_state = state['python']
    random.setstate((int(py_state['version']), tuple(int(v) for v in py_state['state']),
                     py_state['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state['cuda']]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def seeded_rngs(seed: int):
    """Run a block with python/NumPy/torch seeded from ``seed``, then restore them."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
