"""One small exception tree; the CLI and the web layer turn these into one clear message."""


class BabelsearchError(Exception):
    """Base class for every error babelsearch reports to a user."""


class IndexNotFound(BabelsearchError):
    """The directory holds no babelsearch index."""


class IncompatibleIndex(BabelsearchError):
    """The index exists but cannot be used as asked (other model, newer format, damaged manifest)."""


class UnknownModel(BabelsearchError):
    """A model spec that the registry cannot resolve."""


class InvalidQuery(BabelsearchError):
    """A query that cannot be searched (empty, too long, bad k)."""


class ImageNotFound(BabelsearchError):
    """No image with that id in the index's catalog."""


class InvalidImage(BabelsearchError):
    """A query image that cannot be decoded (damaged, not an image, too large)."""


class ImageTooLarge(InvalidImage):
    """An image whose decoding would cost more pixels than the caller allows (an upload's ceiling)."""


class SourceError(BabelsearchError):
    """An indexing source (folder, path list) that cannot be read at all."""


class InvalidSetting(BabelsearchError):
    """A build setting that cannot be used (an unsupported index factory, a device that is absent)."""


class IndexBusy(BabelsearchError):
    """Another indexing run is writing the same index directory."""


class ModelUnavailable(BabelsearchError):
    """A model whose weights are neither cached nor downloadable now (offline); the CLI exits with 2."""


class IndexDamaged(IncompatibleIndex):
    """A file of the index is missing, unreadable or disagrees with the others; the message names it and the way out."""
