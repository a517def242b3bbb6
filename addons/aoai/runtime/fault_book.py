"""The fault book: what the declared faults have done so far. Each deployment's draws (a
random generator made from the seed and its name) and quota cuts, and the counts of faults
injected (for metrics and GET /++/faults).

The profiles themselves are configuration (`Deployment.faults`, and the default profile
`SimulatorConfig.default_faults`) and are passed in; the Limits stage asks
`tokens_per_minute` for a deployment's quota of the moment.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .faults import QUOTA_CUT, Choice, FaultProfile, draw, split

if TYPE_CHECKING:
    from .config import Deployment


@dataclass
class _Track:
    """One deployment's draws and quota cuts under its current profile and seed."""

    profile: FaultProfile
    seed: int | None
    rng: random.Random
    cut_until: float = 0.0  # a cut started by a draw lasts until then
    cut_tokens: int = 0


class FaultBook:
    """The profiles in force and their state: each deployment's draws, quota cuts, and the
    counts of faults injected (for metrics and GET /++/faults). Kept by each deployment's
    label (runtime/labels.py), so undefined deployment names beyond the labels' limit share
    one track and one count, and a client's endless names cannot grow the book."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock, self.wall = clock, wall
        self._tracks: dict[str, _Track] = {}
        # Quota cuts other replicas' draws started, by label: (until on `clock`, tokens).
        self._cuts_elsewhere: dict[str, tuple[float, int]] = {}
        # Told of each cut a draw here starts (label, until on the wall clock, tokens): the
        # other replicas cut the quota too.
        self.on_cut: Callable[[str, float, int], None] | None = None
        self.injected: Counter[tuple[str, str]] = Counter()  # (deployment, kind) -> count
        self.hanging = 0  # requests hung right now

    @staticmethod
    def profile_for(deployment: Deployment, default: FaultProfile | None) -> FaultProfile | None:
        """The profile in force on `deployment`: its own, else `default` (the `"*"` entry)."""
        own = deployment.faults
        profile = own if own is not None else default
        return profile if profile is not None and profile.faults else None

    def _track(self, name: str, profile: FaultProfile, seed: int | None) -> _Track:
        track = self._tracks.get(name)
        if track is None or track.profile is not profile or track.seed != seed:
            rng = random.Random(f"{seed}:{name}") if seed is not None else random.Random()
            track = self._tracks[name] = _Track(profile, seed, rng)
        return track

    def choose(self, deployment: Deployment, default: FaultProfile | None, seed: int | None) -> Choice:
        """Draw for one request on `deployment`; starts a quota cut when one strikes."""
        profile = self.profile_for(deployment, default)
        if profile is None:
            return Choice()
        track = self._track(deployment.label, profile, seed)
        hits = draw(profile, track.rng)
        now = self.clock()
        for fault in hits:
            if fault.kind == QUOTA_CUT and now >= max(track.cut_until, self._elsewhere_until(deployment.label)):
                track.cut_until, track.cut_tokens = now + fault.for_s, fault.tokens_per_minute
                self.count(deployment.label, QUOTA_CUT)
                if self.on_cut is not None:
                    self.on_cut(deployment.label, self.wall() + fault.for_s, fault.tokens_per_minute)
        return split(hits)

    def take_cut(self, label: str, until: float, tokens: int) -> None:
        """A quota cut another replica's draw started on the deployment with this label, until
        `until` (wall clock, seconds since 1970)."""
        now = self.clock()
        ends = now + (until - self.wall())
        if ends <= now:
            return
        # Bounded by the labels there are; those past their time go as others come.
        self._cuts_elsewhere = {k: v for k, v in self._cuts_elsewhere.items() if v[0] > now}
        self._cuts_elsewhere[label] = (ends, tokens)

    def _elsewhere_until(self, label: str) -> float:
        cut = self._cuts_elsewhere.get(label)
        return cut[0] if cut is not None else 0.0

    def tokens_per_minute(self, deployment: Deployment, default: FaultProfile | None, seed: int | None) -> int:
        """The deployment's token quota now: its own, or the lowest quota cut in force."""
        normal = deployment.tokens_per_minute
        profile = self.profile_for(deployment, default)
        if profile is None:
            return normal
        track = self._track(deployment.label, profile, seed)
        now = self.clock()
        cuts = [track.cut_tokens] if now < track.cut_until else []
        elsewhere = self._cuts_elsewhere.get(deployment.label)
        if elsewhere is not None and now < elsewhere[0]:
            cuts.append(elsewhere[1])
        for fault in profile.faults:
            if fault.every_s is not None and (now - profile.since) % fault.every_s < fault.for_s:
                cuts.append(fault.tokens_per_minute)
        return min(cuts) if cuts else normal

    def count(self, label: str, kind: str) -> None:
        """One more fault of `kind` on the deployment with this label (Deployment.label)."""
        self.injected[(label, kind)] += 1

    def view(
        self, deployments: dict[str, Deployment], default: FaultProfile | None, seed: int | None
    ) -> dict[str, Any]:
        """GET /++/faults: the profile in force per deployment, quota cuts now, counts."""
        shown: dict[str, Any] = {}
        for name, deployment in deployments.items():
            profile = self.profile_for(deployment, default)
            if profile is None:
                continue
            entry: dict[str, Any] = {
                "faults": profile.to_json(),
                "from": "deployment" if deployment.faults is not None else "default",
            }
            tokens = self.tokens_per_minute(deployment, default, seed)
            if tokens != deployment.tokens_per_minute:
                entry["tokensPerMinuteNow"] = tokens
            shown[name] = entry
        injected: dict[str, dict[str, int]] = {}
        for (name, kind), n in sorted(self.injected.items()):
            injected.setdefault(name, {})[kind] = n
        return {
            "seed": seed,
            "default": default.to_json() if default is not None else None,
            "deployments": shown,
            "injected": injected,
            "hanging": self.hanging,
        }
