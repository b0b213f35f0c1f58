"""Datasets in their official on-disk layouts, and the paired transforms.

The ``data:`` section of a training config is a dict with these keys:

``dataset`` (required)
    ``camvid`` (SegNet layout), ``cityscapes`` (gtFine), ``bdd100k`` (10K semantic
    segmentation), ``bdd100k_drivable`` (100K drivable area), ``apolloscape`` (scene
    parsing, read into the Cityscapes-19 classes) or ``folder`` (images + masks).
``root`` (required)
    The dataset folder, as unpacked from the official download (``~`` expanded).
``train_split`` / ``val_split``
    Split names on disk (defaults ``train`` / ``val``). ``build_dataset(cfg, 'train')``
    reads ``train_split``; any other split name is used as given.
``train_splits``
    Optional list of splits trained on together, e.g. ``[train, val]`` for a final model
    once the recipe is chosen (each a role or a split name, as for ``build_dataset``).
    ``build_dataset(cfg, 'train')`` then joins them; when the validation split is among
    them the run has no held-out validation (``held_out_validation``).
``drivable_classes``
    Optional list of class names or ids that count as drivable (replaces the label
    space's default, e.g. ``[road, sidewalk]``).
``skip_corrupt``
    ``false`` (default): an unreadable image or label raises an error naming it.
    ``true``: it is skipped, logged with a running count, and another sample is served.
``label_space`` (``folder`` only, required there)
    A registered label-space name (``camvid``, ``cityscapes``, ...) or a dict in the
    form of ``LabelSpace.to_dict()``.
``image_dir`` / ``mask_dir`` / ``mask_suffix`` / ``id_map`` (``folder`` only)
    Sub-folder names (defaults ``images`` / ``masks``), a suffix on mask stems such as
    ``_mask``, and an optional {raw value: class id} translation.
``records`` (``apolloscape`` only)
    {split: [``road02_ins/Record001``, ...]}; see :mod:`.apolloscape` for the default split.
``eval_resize``
    Optional ``[H, W]``: the evaluation transform resizes image and mask to this size.
``augment``
    The training augmentation, each step optional (absent or 0 = off)::

        scale: [0.5, 2.0]        # random rescale factor range (image bilinear, mask nearest)
        crop: [360, 480]         # random crop H, W; smaller images are padded first
        pad_image: mean          # image padding colour: "mean" (0 after normalising) or "zero"
        hflip: 0.5               # horizontal flip probability
        color_jitter: {brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.0}
                                 # a number x: factors 1-x..1+x; or a range [lo, hi]
        low_light: {p: 0.25, gamma: [1.5, 3.0], noise: 6}   # night look: gamma + noise
        glare: {p: 0.25, strength: [0.3, 0.9], radius: [0.1, 0.4]}
                                 # a light source's veil (low sun, headlights): a spot in
                                 # the upper half fading towards white; radius x diagonal
        elastic: {alpha: 0, sigma: 0}   # elastic deformation (U-Net), alpha in pixels

    Masks are padded with the label space's ignore id and always resampled nearest.

Any other key (or a dataset-specific key under another dataset) is a ``ConfigError``
naming it, with the closest known key.
"""
from __future__ import annotations

from typing import List, Optional

from seg_perception.config import check_keys
from seg_perception.errors import InvalidValueError
from seg_perception.labels import CAMVID, CITYSCAPES, BDD100K_DRIVABLE, LabelSpace, get_label_space
from seg_perception.data.common import (CorruptFileError, DatasetError, LabelValueError,
                                        MissingDataError, SegmentationDataset)

__all__ = ['build_dataset', 'build_transforms', 'label_space_for_config', 'DATASETS',
           'train_split_names', 'held_out_validation',
           'DATA_KEYS', 'data_keys',
           'SegmentationDataset', 'DatasetError', 'MissingDataError', 'LabelValueError',
           'CorruptFileError']

# dataset name → (module, class name, base label space or None when set by the config)
DATASETS = {
    'camvid': ('camvid', 'CamVidDataset', CAMVID),
    'cityscapes': ('cityscapes', 'CityscapesDataset', CITYSCAPES),
    'bdd100k': ('bdd100k', 'BDD100KSemSegDataset', CITYSCAPES),
    'bdd100k_drivable': ('bdd100k', 'BDD100KDrivableDataset', BDD100K_DRIVABLE),
    'apolloscape': ('apolloscape', 'ApolloScapeDataset', CITYSCAPES),
    'folder': ('folder', 'FolderDataset', None),
}
_FOLDER_KEYS = ('image_dir', 'mask_dir', 'mask_suffix', 'id_map')
# The keys of a data: section that this package reads (see the docstring above): those
# of every dataset, and those of one dataset only.
DATA_KEYS = ('dataset', 'root', 'train_split', 'train_splits', 'val_split', 'drivable_classes',
             'skip_corrupt', 'eval_resize', 'augment')
DATASET_KEYS = {'folder': ('label_space',) + _FOLDER_KEYS, 'apolloscape': ('records',)}


def data_keys(dataset: str) -> tuple:
    """The keys a ``data:`` section for ``dataset`` may hold."""
    return DATA_KEYS + DATASET_KEYS.get(dataset, ())


def _dataset_name(cfg: dict) -> str:
    if not isinstance(cfg, dict) or 'dataset' not in cfg:
        raise InvalidValueError('data config needs a "dataset" key; one of: ' + ', '.join(DATASETS))
    name = str(cfg['dataset']).lower()
    if name not in DATASETS:
        raise InvalidValueError(f'unknown dataset {cfg["dataset"]!r}; known: {", ".join(DATASETS)}')
    check_keys(cfg, data_keys(name), 'data')
    return name


def label_space_for_config(cfg: dict) -> LabelSpace:
    """The label space a data config yields (with ``drivable_classes`` applied); no disk access."""
    name = _dataset_name(cfg)
    space = DATASETS[name][2]
    if space is None:
        given = cfg.get('label_space')
        if given is None:
            raise InvalidValueError('dataset "folder" needs a "label_space" (a name such as '
                                    'camvid, or a dict with name, class_names, palette, '
                                    'drivable_ids, ignore_index)')
        space = get_label_space(given) if isinstance(given, str) else LabelSpace.from_dict(given)
    if cfg.get('drivable_classes') is not None:
        space = space.with_drivable(cfg['drivable_classes'])
    return space


def resolve_split(cfg: dict, split: str) -> str:
    """Map a role (``train``/``val``) to the split name configured for it."""
    key = f'{split}_split'
    return str(cfg[key]) if cfg.get(key) is not None else split


def train_split_names(cfg: dict) -> List[str]:
    """The split names on disk that training reads: ``train_splits`` or the train split."""
    given = cfg.get('train_splits')
    if given is None:
        return [resolve_split(cfg, 'train')]
    if (not isinstance(given, (list, tuple)) or not given
            or not all(isinstance(s, str) and s for s in given)):
        raise InvalidValueError(f'data.train_splits must be a list of split names, e.g. '
                                f'[train, val], got {given!r}')
    names = [resolve_split(cfg, s) for s in given]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidValueError(f'data.train_splits names the split {repeated[0]!r} twice '
                                f'({given!r})')
    return names


def held_out_validation(cfg: dict) -> bool:
    """Whether the validation split is one training does not read."""
    return resolve_split(cfg, 'val') not in train_split_names(cfg)


def build_dataset(cfg: dict, split: str, transform=None) -> SegmentationDataset:
    """Build the dataset described by a ``data:`` config for ``split``.

    ``split`` is a role (``train``/``val``, looked up in ``train_split``/``val_split``)
    or a split name on disk. Without ``transform`` samples are (float 0..1 image,
    int64 mask), not normalised; pass ``build_transforms(...)`` for training. The
    ``train`` role with ``train_splits`` of more than one split is their JoinedSplits.
    """
    if split == 'train' and cfg.get('train_splits') is not None:
        names = train_split_names(cfg)
        if len(names) > 1:
            from seg_perception.data.joined import JoinedSplits
            return JoinedSplits([_one_split(cfg, name, transform) for name in names])
        return _one_split(cfg, names[0], transform)
    return _one_split(cfg, resolve_split(cfg, split), transform)


def _one_split(cfg: dict, split_name: str, transform) -> SegmentationDataset:
    import importlib

    name = _dataset_name(cfg)
    if not cfg.get('root'):
        raise InvalidValueError(f'data config for {name!r} needs a "root" folder')
    module_name, class_name, _ = DATASETS[name]
    cls = getattr(importlib.import_module(f'{__name__}.{module_name}'), class_name)
    kwargs = dict(split=split_name, transform=transform,
                  skip_corrupt=bool(cfg.get('skip_corrupt', False)),
                  label_space=label_space_for_config(cfg))
    if name == 'folder':
        kwargs.update({k: cfg[k] for k in _FOLDER_KEYS if cfg.get(k) is not None})
    if name == 'apolloscape' and cfg.get('records'):
        kwargs['records'] = cfg['records']
    return cls(cfg['root'], **kwargs)


def build_transforms(cfg: dict, train: bool, mean, std, ignore_index: Optional[int] = None):
    """The paired (image, mask) transform of a ``data:`` config; see :mod:`.transforms`."""
    from seg_perception.data.transforms import build_transforms as _build

    if ignore_index is None:
        ignore_index = label_space_for_config(cfg).ignore_index
    return _build(cfg, train, mean, std, ignore_index=ignore_index)
