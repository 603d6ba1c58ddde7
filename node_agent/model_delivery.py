"""What a model's GGUF delivery reports: its blob's hash and size, and a download's progress."""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet_contract.units import format_size


@dataclass(frozen=True, slots=True)
class DownloadReport:
    """A download of a model's blob, now: bytes done of total (0: unknown), the rate over the
    last seconds, the seconds left (0: unknown) and where the bytes come from ("origin",
    "peer n2")."""

    bytes_done: int
    bytes_total: int
    rate_bps: float
    eta_s: float
    source: str

    def reason(self) -> str:
        """The model's status line: `downloading 45% from peer n2 (3.1 MiB/s, 40 s left)`."""
        if self.bytes_total:
            done = f"{min(100, self.bytes_done * 100 // self.bytes_total)}%"
        else:
            done = format_size(self.bytes_done)
        details = []
        if self.rate_bps > 0:
            details.append(f"{_spaced(format_size(int(self.rate_bps)))}/s")
        if self.eta_s > 0:
            details.append(f"{self.eta_s:.0f} s left")
        tail = f" ({', '.join(details)})" if details else ""
        return f"downloading {done} from {self.source}{tail}"


@dataclass(slots=True)
class Delivery:
    """How a model's GGUF reaches the node: the blob's sha256 and size once known, the
    download while bytes move, and the blob it pins while loaded."""

    sha256: str = ""
    size_bytes: int = 0
    download: DownloadReport | None = None
    pinned: str = ""
    """The sha256 of the blob this model holds pinned in the store; empty: none."""


def _spaced(size: str) -> str:
    """`3.1MiB` as `3.1 MiB`."""
    number = size.rstrip("KMGTPEiB")
    return f"{number} {size[len(number) :]}" if number != size else size
