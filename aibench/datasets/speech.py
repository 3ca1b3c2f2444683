"""Speech as an ASR application receives it: 16 kHz mono float32 waveforms in [-1, 1].

Real source (offline): the LibriVox clips with transcripts in Debian's ``pocketsphinx-testdata``
(``apt-get install pocketsphinx-testdata``; 16 kHz 16-bit WAV, 3–7 s), read with the standard ``wave``
module (``torchaudio.load`` needs torchcodec). Synthetic stand-in: seeded speech-like signals (a voiced
source with a wandering pitch, moving formant-like resonances, a syllable-rate envelope and breath noise)
of exactly the length that gives the requested number of 10 ms feature frames.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from aibench.datasets import Samples, SourceMissing, cycle, pick

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms frames at 16 kHz
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def samples_for_frames(frames: int) -> int:
    """Waveform length that gives ``frames`` centred STFT frames with a 10 ms hop."""
    return max(1, (frames - 1) * HOP)


def synthetic_utterance(rng: np.random.Generator, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = 110 + 40 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3)) + rng.uniform(0, 60)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    f1 = 500 + 300 * np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6.3))
    f2 = 1500 + 600 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6.3))
    voiced = np.zeros(n)
    for h in range(1, 30):
        fh = h * f0
        gain = np.exp(-((fh - f1) / 250) ** 2) + 0.5 * np.exp(-((fh - f2) / 350) ** 2) + 0.02
        voiced += gain * np.sin(h * phase) * (fh < sr / 2)
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.3)), 0, None) ** 0.7
    x = voiced * envelope + 0.05 * rng.standard_normal(n)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        if w.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz, got {w.getframerate()}")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).copy()


def real_utterances(directory: Path = POCKETSPHINX_DIR) -> Samples:
    wavs = sorted(directory.glob("*.wav")) if directory.is_dir() else []
    if not wavs:
        raise SourceMissing(f"no WAV files in {directory} (apt-get install pocketsphinx-testdata)")
    transcripts: dict[str, str] = {}
    tfile = directory / "transcription"
    if tfile.is_file():
        for line in tfile.read_text().splitlines():
            if "(" in line:
                text, _, utt = line.rpartition("(")
                transcripts[utt.strip(") ")] = text.replace("<s>", "").replace("</s>", "").strip()
    clips = [read_wav(p) for p in wavs]
    return Samples(clips, {"source": "real", "name": f"pocketsphinx-testdata LibriVox clips ({directory})",
                           "distinct": len(clips), "seconds": [round(len(c) / SAMPLE_RATE, 3) for c in clips],
                           "transcripts": [transcripts.get(p.stem, "") for p in wavs]})


def utterances(n: int, frames: int = 548, mode: str = "auto", seed: int = 0,
               directory: Path = POCKETSPHINX_DIR) -> Samples:
    """``n`` waveforms: synthetic ones give exactly ``frames`` 10 ms frames; real ones keep their length."""

    def synthetic() -> Samples:
        rng = np.random.default_rng(seed)
        length = samples_for_frames(frames)
        return Samples([synthetic_utterance(rng, length) for _ in range(n)],
                       {"source": "synthetic", "name": "seeded speech-like signals", "seed": seed,
                        "note": f"{length / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz = {frames} frames of 10 ms"})

    def real() -> Samples:
        s = real_utterances(directory)
        return Samples(cycle(s.items, n), s.info)

    return pick(mode, "speech", real, synthetic)
