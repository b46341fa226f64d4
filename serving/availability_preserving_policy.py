"""Version states and the one-step load/unload decision, as TF Serving's availability-preserving policy.

As ``core/availability_preserving_policy.cc`` (the policy ServerCore uses by default): :func:`next_action`
unloads the lowest un-aspired AVAILABLE version only when an aspired version is AVAILABLE (or nothing is
aspired, or several un-aspired versions serve), otherwise loads the highest new aspired version. So a new
version is loaded and warmed before the old one goes, and a version that fails to load (state END with its
error) leaves the old one serving. A pure function over version states, unit-tested without a thread or a
file system; :class:`VersionState` holds ``ModelVersionStatus.State``'s names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class VersionState(str, Enum):
    """A version's state; the values are TF Serving's names (``ModelVersionStatus.State``, REST's JSON)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"

    def __str__(self) -> str:
        return self.value


START, LOADING, AVAILABLE, UNLOADING, END = VersionState


@dataclass(frozen=True)
class Action:
    """What the manager does next for one model: ``load`` or ``unload`` one ``version``."""

    kind: str  # "load" | "unload"
    version: int


def next_action(
    aspired: set[int], states: Mapping[int, VersionState], failed: frozenset[int] | set[int] = frozenset()
) -> Action | None:
    """One step of TF Serving's ``AvailabilityPreservingPolicy``, as a pure function.

    ``states`` holds the state of every version the manager knows; ``failed`` the END versions whose load
    failed and that are not to be tried again. Unload the lowest un-aspired AVAILABLE version when an aspired
    version serves, or nothing is aspired, or more than one un-aspired version serves; otherwise load the
    highest aspired version not yet tried (or unloaded before, and aspired again); else nothing.
    """
    live = {v: s for v, s in states.items() if s != END}
    aspired_serving = any(s == AVAILABLE for v, s in live.items() if v in aspired)
    unaspired_serving = sorted(v for v, s in live.items() if v not in aspired and s == AVAILABLE)
    if unaspired_serving and (not aspired or aspired_serving or len(unaspired_serving) > 1):
        return Action("unload", unaspired_serving[0])
    new = [v for v in aspired if v not in states or (states[v] == END and v not in failed)]
    if new:
        return Action("load", max(new))
    return None
