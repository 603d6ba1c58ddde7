"""Reading a runtime's Prometheus `/metrics` page (the text exposition format).

Only what the capacity figures need: sample lines `name{label="value",...} number`,
comments and unparsable lines skipped. Label values may not contain `}` or `,`
here (runtimes label by model name and engine, which do not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line of a metrics page."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a metrics page, in order."""
    samples: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.rpartition("}") if "}" in line else ("", "", line)
        if head:
            name, _, label_text = head.partition("{")
            fields = rest.split()
        else:
            name, *fields = rest.split()
            label_text = ""
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        samples.append(Sample(name.strip(), _labels(label_text), value))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels`; None if none."""
    found = [
        s.value
        for s in samples
        if s.name == name
        and all(s.labels.get(k) == v for k, v in labels.items())
        and not math.isnan(s.value)
    ]
    return sum(found) if found else None


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if sep:
            labels[key.strip()] = value.strip().strip('"')
    return labels
