"""Train a segmentation network from a config (the work of ``seg-perception train``).

One process (CPU or one GPU) or many under ``torchrun`` (DDP from the environment,
see distributed.py). The run folder gets ``config.yaml`` (the effective config),
``train.log``, ``tensorboard/``, ``last.pt`` (every ``train.checkpoint_every``
iterations and at the end) and ``best.pt`` (best validation mIoU). ``--resume``
continues from ``last.pt`` exactly: weights (and their average, ``train.ema_decay``),
optimizer, LR schedule, GradScaler, RNG states and the position in the current epoch's
data order.

Iterations count optimizer steps; one step consumes ``train.batch_size`` images
in total (split over processes and ``train.accumulate`` micro-batches), so a
config trains the same recipe on any number of GPUs.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from seg_perception.errors import InvalidValueError

LOGGER = logging.getLogger('seg_perception.training')


def train(config: Dict[str, Any], output_dir: str, resume: Optional[str] = None
          ) -> Dict[str, Any]:
    """Train as ``config`` says (a dict from config.load_config); return a summary.

    ``resume`` is a checkpoint written by an earlier run of the same config. Without
    it, an existing ``output_dir/last.pt`` is an error rather than overwritten.
    """
    from seg_perception.training.config_keys import check_config_keys
    from seg_perception.training.distributed import init_distributed, shutdown
    check_config_keys(config)          # before anything is created or started
    ctx = init_distributed(config['train']['device'])
    try:
        from seg_perception.training.trainer import Trainer
        trainer = Trainer(config, output_dir, ctx)
        if resume is None and ctx.is_main and os.path.exists(trainer.last_path):
            raise InvalidValueError(f'{trainer.last_path} exists: pass --resume to continue that '
                                    'run, or choose another --output')
        return trainer.fit(resume)
    finally:
        package_logger = logging.getLogger('seg_perception')
        for handler in list(package_logger.handlers):
            if getattr(handler, '_seg_perception_run', False):   # this run's train.log
                package_logger.removeHandler(handler)
                handler.close()
        shutdown(ctx)
