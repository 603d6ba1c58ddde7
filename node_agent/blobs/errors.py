"""The blob store's exception tree: catch BlobError for any of them."""

from __future__ import annotations


class BlobError(Exception):
    """A blob cannot be stored, found or fetched; the message says what to do."""


class BlobMismatch(BlobError):
    """The bytes received do not hash to the expected sha256 (nothing was kept)."""

    def __init__(self, expected: str, actual: str, what: str = "the downloaded file") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{what} has sha256 {actual} but {expected} was expected; the source serves "
            "different bytes than the pin: fix the source or the sha256 pin"
        )


class NoRoom(BlobError):
    """The disk budget (or the disk) cannot take a blob: no other source can help."""


class SourceError(BlobError):
    """One source failed (the message names it, never a credential); another may work."""


class RangeIgnored(SourceError):
    """The source answered a resumed request with the whole file (HTTP 200, not 206):
    the transfer must start again at offset 0."""


class DownloadError(BlobError):
    """Every source failed; the message lists why each one did."""
