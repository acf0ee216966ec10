"""Reading recordings back for tests: decode with PyAV, measure tones by FFT,
and a tiny tmpfs for disk-full tests (root only)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Every sample of the file's first audio stream (mono float), and its rate."""
    chunks = []
    rate = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            rate = frame.sample_rate
            data = frame.to_ndarray()
            if data.dtype.kind == "f":
                data = data * 32768.0
            chunks.append(data.reshape(-1).astype(np.float64) if data.shape[0] == 1
                          else data.mean(axis=0).astype(np.float64))
    return (np.concatenate(chunks) if chunks else np.zeros(0)), rate


def tone_level(samples: np.ndarray, rate: int, hz: float, band: float = 20.0) -> float:
    """Amplitude of the sine at ``hz`` in ``samples`` (Hann-windowed FFT)."""
    if len(samples) < 64:
        return 0.0
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    mask = (freqs >= hz - band) & (freqs <= hz + band)
    return float(spectrum[mask].max()) if mask.any() else 0.0


def sine(hz: float, n: int, rate: int, amplitude: float = 8000, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + n) / rate
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@functools.lru_cache(maxsize=None)
def can_mount() -> bool:
    """True when a tmpfs can be mounted here (root with the right to mount:
    not in every container)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory(prefix="sipconf-mount-check-") as directory:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", directory],
                              capture_output=True, timeout=10)
        if done.returncode != 0:
            return False
        subprocess.run(["umount", directory], capture_output=True, timeout=10)
        return True


@contextlib.contextmanager
def tiny_tmpfs(directory: Path, size: str = "16k"):
    """A tmpfs of ``size`` mounted at ``directory`` (created), unmounted after."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
