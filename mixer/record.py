"""Recording a conference's mix to a file with PyAV, off the mixer tick.

The mixer thread calls :meth:`Recorder.push` once per tick with the
conference's full mix (everyone, at the conference's current rate). That call
is only a copy of the block and an append to a bounded deque: no lock, no
wake-up, no numpy beyond the copy. A worker thread of the recorder wakes
every ``DRAIN_INTERVAL`` seconds, takes everything queued, and does the
rest: int16 conversion, resampling to the file's fixed rate (the mix rate
may change while the file is written), encoding and writing.

When the worker falls behind (a slow disk) the deque fills; further blocks
are dropped and counted (``frames_dropped``), never waited for. The file's
timeline stays true: a dropped or skipped tick becomes 20 ms of silence, so
the file is as long as the recording was.

A failure (full disk, unwritable directory, any encoder error) ends the
recording: the worker logs one line, closes what it can and reports through
``on_end``; pushes after that return at once. Stopping flushes the
resampler and the encoder and writes the container's trailer, so the file
is complete and playable.

Nothing here knows about SIP: the caller names the file and reacts to
``on_end`` (called in the worker thread).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import deque
from fractions import Fraction
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: format name -> (PyAV container format, codec, fixed file rate or None for
#: "the rate of the first block"). Ogg/Opus is always 48 kHz: Opus decoders
#: play at 48 kHz whatever was encoded, and any mix rate resamples into it.
FORMATS: dict[str, tuple[str, str, int | None]] = {
    "ogg": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", None),
    "wav": ("wav", "pcm_s16le", None),
}
OPUS_BIT_RATE = 32000  # mono speech: transparent enough, 240 kB a minute
TICK_S = 0.020
DRAIN_INTERVAL = 0.1  # s between the worker's drains (5 ticks a batch)
QUEUE_TICKS = 500  # 10 s of audio queued at most before blocks are dropped
#: Longest hole (ticks) filled with silence: a clock jump beyond this (a
#: suspended machine) is not worth minutes of zeros.
MAX_GAP_TICKS = 50 * 60


class Recorder:
    """One file being written from blocks pushed by the mixer thread."""

    def __init__(self, path: str, fmt: str = "ogg", *, file_rate: int | None = None,
                 queue_ticks: int = QUEUE_TICKS, drain_interval: float = DRAIN_INTERVAL,
                 on_end: Callable[["Recorder"], None] | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown recording format {fmt!r}: one of {', '.join(FORMATS)}")
        self.path = path
        self.format = fmt
        container, codec, fixed_rate = FORMATS[fmt]
        self._container_format = container
        self._codec = codec
        self.file_rate = fixed_rate or file_rate  # None: the first block's rate
        self._queue: deque = deque()
        self._capacity = queue_ticks
        self._drain_interval = drain_interval
        self._on_end = on_end
        self._accepting = True  # read by push() on the mixer thread
        self._stop = threading.Event()
        self.frames_dropped = 0  # written by the mixer thread only
        self.frames_written = 0  # blocks (ticks) in the file, silence fills included
        self.error: str | None = None  # why the recording failed, if it did
        self.finished = threading.Event()  # the file is closed (complete, or failed)
        self._thread = threading.Thread(target=self._run, name=f"recorder {path}", daemon=True)
        # worker state
        self._out = None
        self._file: _CheckedFile | None = None
        self._stream = None
        self._resampler = None
        self._in_rate: int | None = None
        self._pts = 0
        self._next_tick: int | None = None

    # -- mixer thread -------------------------------------------------------------------------
    def push(self, pcm: np.ndarray, rate: int, tick: int) -> None:
        """One tick of the mix: int16 samples (or wider integers, which the
        worker clips) at ``rate``; ``tick`` numbers the block so that dropped
        and skipped ticks become silence. Never blocks."""
        if not self._accepting:
            return
        queue = self._queue
        if len(queue) >= self._capacity:
            self.frames_dropped += 1
            return
        queue.append((tick, rate, pcm.copy()))

    # -- any thread ---------------------------------------------------------------------------
    def start(self) -> "Recorder":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop taking blocks; the worker writes what is queued and closes the
        file (``finished`` is set when it is done). Idempotent."""
        self._accepting = False
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the file to be closed; True once it is."""
        return self.finished.wait(timeout)

    @property
    def active(self) -> bool:
        return self._accepting and not self.finished.is_set()

    @property
    def duration_s(self) -> float:
        return self.frames_written * TICK_S

    # -- worker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.file_rate is not None:
                self._open()  # at once: an unwritable directory is found before any audio
            while True:
                stopping = self._stop.wait(self._drain_interval)
                self._drain()
                if stopping:
                    break
            self._close()
        except Exception as error:  # noqa: BLE001 - disk full, no permission, encoder: all end the recording
            self._accepting = False
            self._queue.clear()
            self.error = _describe(error)
            log.error("recording %s stopped: %s", self.path, self.error)
            self._abandon()
        finally:
            self.finished.set()
            if self._on_end is not None:
                try:
                    self._on_end(self)
                except Exception:  # noqa: BLE001
                    log.exception("recording %s: end callback failed", self.path)

    def _drain(self) -> None:
        """Encode everything queued, consecutive blocks of one rate as one frame."""
        queue = self._queue
        if not queue:
            return
        blocks: list[np.ndarray] = []
        rate = None
        while queue:
            tick, block_rate, pcm = queue.popleft()
            if rate is not None and block_rate != rate:
                self._write(_int16(blocks), rate)
                blocks = []
            rate = block_rate
            if self._next_tick is not None:
                gap = tick - self._next_tick
                if 0 < gap <= MAX_GAP_TICKS:
                    blocks.append(np.zeros(gap * len(pcm), dtype=np.int16))
                    self.frames_written += gap
            self._next_tick = tick + 1
            blocks.append(pcm)
            self.frames_written += 1
        self._write(_int16(blocks), rate)

    def _open(self) -> None:
        import av  # PyAV: imported by the worker, so a server without recordings never loads it

        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Our own file object under PyAV: libavformat keeps a write error to
        # itself until the trailer, this one raises it at the write that failed.
        self._file = _CheckedFile.create(self.path)
        self.path = self._file.path
        try:
            out = av.open(self._file, mode="w", format=self._container_format)
        except BaseException:
            self._file.close()
            raise
        try:
            stream = out.add_stream(self._codec, rate=self.file_rate, layout="mono")
            stream.codec_context.format = "s16"
            if self._codec == "libopus":
                stream.bit_rate = OPUS_BIT_RATE
        except BaseException:
            out.close()
            self._file.close()
            raise
        self._out, self._stream = out, stream

    def _write(self, pcm: np.ndarray, rate: int) -> None:
        import av

        if self._out is None:
            if self.file_rate is None:
                self.file_rate = rate
            self._open()
        if rate != self._in_rate:
            self._flush_resampler()
            self._in_rate = rate
            self._resampler = None if rate == self.file_rate else av.AudioResampler(
                format="s16", layout="mono", rate=self.file_rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        if self._resampler is None:
            self._encode(frame)
        else:
            for out_frame in self._resampler.resample(frame):
                self._encode(out_frame)

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            for out_frame in self._resampler.resample(None):
                self._encode(out_frame)
            self._resampler = None

    def _encode(self, frame) -> None:
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.file_rate)
        self._pts += frame.samples
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self._file.check()

    def _close(self) -> None:
        """Flush everything and write the trailer: a complete file."""
        if self._out is None:
            return  # no rate was known and nothing was pushed: no file
        self._flush_resampler()
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        out, self._out = self._out, None
        out.close()
        self._file.check()
        self._file.close()

    def _abandon(self) -> None:
        """After a failure: release the file without caring for errors."""
        out, self._out = self._out, None
        for closable in (out, self._file):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # noqa: BLE001 - the disk is already known to be broken
                    pass


class _CheckedFile:
    """The file PyAV writes through: unbuffered (libavformat buffers), every
    byte written or the error kept, and ``check`` raises the first error."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open(path, "xb", buffering=0)  # never over another recording
        self.error: OSError | None = None

    @classmethod
    def create(cls, path: str) -> "_CheckedFile":
        """A new file at ``path``, or ``name-2.ext``, ``name-3.ext``... when
        it exists (two recordings of one conference started in the same second)."""
        stem, ext = os.path.splitext(path)
        for n in range(1, 1000):
            try:
                return cls(path if n == 1 else f"{stem}-{n}{ext}")
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "too many recordings with this name", path)

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                n = self._f.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
        except OSError as error:
            if self.error is None:
                self.error = error
            raise
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._f.close()


def _int16(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks end to end as int16; wider integers (the mixer's sums) are
    clipped, not wrapped. One clip for the whole batch."""
    pcm = np.concatenate(blocks)
    if pcm.dtype != np.int16:
        pcm = np.clip(pcm, -32768, 32767).astype(np.int16)
    return pcm


def _describe(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text
