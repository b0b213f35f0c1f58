"""Shared pieces of the datasets: errors, file reading, label-id mapping, the base class.

Every dataset builds a list of ``(image_path, label_path)`` pairs up front (checking
the layout as it goes) and maps the raw ids found in its label files to the ids
of its :class:`~seg_perception.labels.LabelSpace` through a 256-entry lookup
table. An id the table does not know is an error naming the file and the values,
so a label file from the wrong dataset or a colour-coded PNG never turns into a
silently wrong class.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from seg_perception.errors import InvalidValueError, SegPerceptionError

try:
    from torch.utils.data import Dataset
except ImportError:
    # A vehicle without torch still reads datasets: `evaluate --model` scores an ONNX
    # model through the runtime pipeline. Only training needs torch's Dataset (and
    # the tensors of default_to_tensor).
    Dataset = object

from seg_perception.labels import LabelSpace

LOGGER = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# PIL modes that hold one integer class id per pixel. 'P' (palette) PNGs are read as
# their raw indices, never through the palette (cv2 would expand them to colour).
LABEL_MODES = ('L', 'P', 'I;16', 'I;16B', 'I;16L', 'I')

Sample = Tuple[str, str]


class DatasetError(SegPerceptionError):
    """Base class of the dataset errors; each message names the file or folder."""


class MissingDataError(DatasetError, FileNotFoundError):
    """A folder of the layout, or the label of an image, is missing."""


class LabelValueError(DatasetError, ValueError):
    """A label file holds ids that the dataset's table does not know."""


class CorruptFileError(DatasetError, ValueError):
    """An image or label file cannot be decoded, or has the wrong shape or mode."""


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and what it should hold."""
    if not path.is_dir():
        parent = path.parent
        hint = '' if parent.is_dir() else f' (its parent {parent} does not exist either)'
        raise MissingDataError(f'{what}: folder {path} not found{hint}')
    return path


def list_images(folder: Path, recursive: bool = False,
                suffix: Optional[str] = None) -> List[Path]:
    """Sorted image files in ``folder`` (optionally below it), optionally ending in ``suffix``."""
    pattern = '**/*' if recursive else '*'
    found = []
    for path in folder.glob(pattern):
        name = path.name
        if suffix is not None:
            if name.endswith(suffix):
                found.append(path)
        elif path.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith('.'):
            found.append(path)
    return sorted(p for p in found if p.is_file())


def read_list_file(list_file: Path, parse: Callable[[str], Tuple[Path, Path]],
                   what: str) -> List[Sample]:
    """The samples of a list file, one image and its label a line (blank lines and # comments
    skipped). ``parse`` turns a line into the two paths, raising ValueError for a line that
    is not one; every error names the file and line."""
    samples = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        where = f'{list_file}:{number}'
        try:
            image, label = parse(line)
        except ValueError as exc:
            raise InvalidValueError(f'{where}: {exc}') from None
        if not image.is_file():
            raise MissingDataError(f'{where}: image {image} not found')
        if not label.is_file():
            raise MissingDataError(f'{where}: image {image} has no label (expected {label})')
        samples.append((str(image), str(label)))
    if not samples:
        raise MissingDataError(f'{what}: {list_file} lists no images')
    return samples


def pair_or_fail(images: Sequence[Path], label_for: Callable[[Path], Path],
                 root: Path, what: str) -> List[Sample]:
    """Pair each image with ``label_for(image)``; raise naming the first image without one."""
    if not images:
        raise MissingDataError(f'{what}: no images found under {root}')
    samples, missing = [], []
    for image in images:
        label = label_for(image)
        if label.is_file():
            samples.append((str(image), str(label)))
        else:
            missing.append((image, label))
    if missing:
        image, label = missing[0]
        raise MissingDataError(
            f'{what}: image {image} has no label (expected {label}); '
            f'{len(missing)} of {len(images)} images have no label')
    return samples


def read_image(path: str) -> np.ndarray:
    """Decode an image file to H×W×3 uint8 RGB; a broken file raises CorruptFileError."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, with its name
            rgb = img.convert('RGB')
    except FileNotFoundError:
        raise MissingDataError(f'image file {path} not found') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(f'cannot read image {path}: {exc}') from exc
    return np.array(rgb)  # writable: torch.from_numpy warns on read-only arrays


def read_label_file(path: str) -> np.ndarray:
    """Read a single-channel label PNG as its raw integer ids (H×W, uint8 or int32)."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in LABEL_MODES:
                raise CorruptFileError(
                    f'label {path}: PIL mode {mode!r} ({len(img.getbands())} channels); '
                    'expected a single-channel image of class ids (L, P or 16-bit). '
                    'Colour-coded label images are not supported')
            raw = np.array(img)
    except FileNotFoundError:
        raise MissingDataError(f'label file {path} not found') from None
    except CorruptFileError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(f'cannot read label {path}: {exc}') from exc
    if raw.dtype != np.uint8:
        raw = raw.astype(np.int32)
    return raw


class LabelMapper:
    """Maps raw label ids (0..255) to label-space ids through a lookup table.

    ``table`` maps each known raw id to a class id or to the ignore id; any other
    raw value is reported as an error together with the file it came from.
    """

    def __init__(self, table: Mapping[int, int], ignore_index: int, source: str = ''):
        self.lut = np.full(256, ignore_index, np.uint8)
        self.known = np.zeros(256, bool)
        for raw_id, mapped in table.items():
            if not 0 <= int(raw_id) < 256 or not 0 <= int(mapped) < 256:
                raise InvalidValueError(f'label table {source}: entry {raw_id} -> {mapped} '
                                        'is outside 0..255')
            self.lut[int(raw_id)] = int(mapped)
            self.known[int(raw_id)] = True
        self.source = source

    @classmethod
    def identity(cls, space: LabelSpace, source: str = '') -> 'LabelMapper':
        """Class ids and the ignore id map to themselves; nothing else is accepted."""
        table: Dict[int, int] = {i: i for i in range(space.num_classes)}
        table[space.ignore_index] = space.ignore_index
        return cls(table, space.ignore_index, source or f'{space.name} ids')

    def __call__(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Return the mapped H×W uint8 ids; unknown raw ids raise LabelValueError."""
        if raw.dtype != np.uint8:
            big = np.unique(raw[(raw < 0) | (raw > 255)])
            if big.size:
                raise LabelValueError(
                    f'label {path}: ids {_short_list(big)} are not in the {self.source} '
                    'table (values must be 0..255)')
            raw = raw.astype(np.uint8)
        unknown = ~self.known[raw]
        if unknown.any():
            bad = np.unique(raw[unknown])
            raise LabelValueError(
                f'label {path}: ids {_short_list(bad)} are not in the {self.source} table '
                f'({int(unknown.sum())} pixels); known ids: '
                f'{_short_list(np.flatnonzero(self.known))}')
        return self.lut[raw]


def _short_list(values: np.ndarray, limit: int = 20) -> str:
    items = [str(int(v)) for v in values[:limit]]
    more = f', ... ({len(values)} in all)' if len(values) > limit else ''
    return '[' + ', '.join(items) + more + ']'


def default_to_tensor(image: np.ndarray, mask: np.ndarray):
    """Fallback transform: image float32 3×H×W on 0..1 (not normalised), mask int64 H×W."""
    import torch

    image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return image_t, torch.from_numpy(mask.astype(np.int64))


class SegmentationDataset(Dataset):
    """Base of every dataset: ``samples`` of (image, label) paths plus a label mapper.

    ``__getitem__`` returns ``transform(image H×W×3 uint8 RGB, mask H×W uint8)``; the
    transforms of :mod:`seg_perception.data.transforms` turn that into a normalised
    float32 3×H×W image and an int64 H×W mask. ``read_label(i)`` gives the mapped
    mask alone (no image decoding) for class statistics.

    With ``skip_corrupt=True`` a sample whose files cannot be read is logged, counted
    in ``skipped`` and replaced by the next readable one; otherwise the error, which
    names the file, propagates (also out of DataLoader workers).
    """

    name = 'dataset'

    def __init__(self, root, split: str, label_space: LabelSpace,
                 transform: Optional[Callable] = None, skip_corrupt: bool = False):
        self.root = Path(os.path.expanduser(str(root)))
        self.split = split
        self.label_space = label_space
        self.transform = transform
        self.skip_corrupt = bool(skip_corrupt)
        self.skipped: Dict[str, str] = {}
        require_dir(self.root, f'{self.name} root')
        self.samples: List[Sample] = self._find_samples()

    # -- to implement --------------------------------------------------------------
    def _find_samples(self) -> List[Sample]:
        raise NotImplementedError

    def mapper_for(self, label_path: str) -> LabelMapper:
        """The raw-id mapper for one label file (datasets may mix label encodings)."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, '
                f'{len(self)} samples, label_space={self.label_space.name!r})')

    def read_label(self, index: int) -> np.ndarray:
        """The mapped H×W uint8 label of sample ``index`` (label-space ids, ignore id)."""
        label_path = self.samples[index][1]
        return self.mapper_for(label_path)(read_label_file(label_path), label_path)

    def read_sample(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Image H×W×3 uint8 and mapped mask H×W uint8 of sample ``index``, untransformed."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        mask = self.read_label(index)
        if image.shape[:2] != mask.shape:
            raise CorruptFileError(
                f'image {image_path} is {image.shape[1]}x{image.shape[0]} but its label '
                f'{label_path} is {mask.shape[1]}x{mask.shape[0]} (W x H)')
        return image, mask

    def note_skipped(self, path: str, error: Exception) -> None:
        """Record a corrupt sample and log it with the running count."""
        self.skipped[path] = str(error)
        LOGGER.warning('%s %s: skipping unreadable sample (%d skipped so far in this '
                       'process): %s', self.name, self.split, len(self.skipped), error)

    def __getitem__(self, index: int):
        if not self.skip_corrupt:
            image, mask = self.read_sample(index)
        else:
            image = mask = None
            for attempt in range(len(self.samples)):
                candidate = (index + attempt) % len(self.samples)
                path = self.samples[candidate][0]
                if path in self.skipped:
                    continue
                try:
                    image, mask = self.read_sample(candidate)
                    break
                except CorruptFileError as exc:
                    self.note_skipped(path, exc)
            if image is None:
                raise CorruptFileError(f'{self.name} {self.split}: all {len(self.samples)} '
                                       f'samples under {self.root} are unreadable')
        transform = self.transform or default_to_tensor
        return transform(image, mask)
