"""Exceptions of the ML core; the Django side maps them to run failures with their message."""


class MLError(Exception):
    """Base class for every error raised on purpose by training.ml."""


class WeightsError(MLError):
    """A weights file is missing, unreadable or does not fit the architecture."""


class ImageDecodeError(MLError):
    """An image could not be opened or decoded; ``index`` is its position in the input."""

    def __init__(self, message: str, *, index: int):
        super().__init__(message)
        self.index = index


class ExportError(MLError):
    """The model could not be exported to a self-contained ONNX file."""


class VerificationError(MLError):
    """An exported file failed to load or disagrees with the reference model."""

    def __init__(self, message: str, *, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class PipelineError(MLError):
    """The inputs of a pipeline run are unusable (labels, splits, empty data)."""
