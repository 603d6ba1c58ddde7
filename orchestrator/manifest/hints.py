"""'Did you mean …?' hints for misspelled names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, allowed_label: str = "allowed") -> str:
    """A hint naming the closest choice, if any, followed by the full list."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    listing = f"{allowed_label}: {', '.join(options)}" if options else ""
    if close:
        return f"did you mean `{close[0]}`? {listing}".strip()
    return listing
