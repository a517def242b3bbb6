"""The names metrics and counters are kept under, bounded whatever names clients send.

A defined deployment is always counted under its own name. An undefined one (a stand-in for
a name the deployments file does not have) is counted under its name while fewer than
METRICS_MAX_DEPLOYMENT_LABELS undefined names have been seen, and under `(other)` after
that, so a client sending endless distinct names cannot grow /++/metrics, the 429 counters
or the fault counts without end. Every label value is at most MAX_LABEL_CHARS long: a longer
name keeps its start and a digest of the whole, so two long names stay apart.
"""

from __future__ import annotations

import hashlib

OTHER = "(other)"  # Azure deployment names hold letters, digits, '-', '_' and '.': never this
MAX_LABEL_CHARS = 128
_DIGEST_CHARS = 16


def capped(value: str) -> str:
    """`value`, or for one longer than MAX_LABEL_CHARS its start, '~' and a digest of it all."""
    if len(value) <= MAX_LABEL_CHARS:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_CHARS // 2).hexdigest()
    return value[: MAX_LABEL_CHARS - _DIGEST_CHARS - 1] + "~" + digest


class DeploymentLabels:
    """The undefined deployment names given labels of their own so far (at most `limit`)."""

    def __init__(self, limit: int = 200):
        self.limit = limit
        self._undefined: set[str] = set()

    def undefined(self, name: str) -> str:
        """The label of an undefined deployment called `name`."""
        label = capped(name)
        if label in self._undefined:
            return label
        if len(self._undefined) < self.limit:
            self._undefined.add(label)
            return label
        return OTHER

    def __len__(self) -> int:
        return len(self._undefined)

    def usage(self) -> dict[str, int]:
        """For /++/limits: the undefined names with labels of their own, and the most there may be."""
        return {"count": len(self._undefined), "maxCount": self.limit, "maxLabelChars": MAX_LABEL_CHARS}
