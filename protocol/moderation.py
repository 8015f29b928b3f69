"""Composable moderation, the parts that decide: which labelers a reader asked for,
what a label does for that reader, and what a node's takedown covers.

Readers choose. A view request names the labelers the reader subscribes to in
atproto's ``atproto-accept-labelers`` header (:func:`parse_accept_labelers`); the node
attaches those labelers' current labels to each post and profile, and says which
labelers it applied in ``atproto-content-labelers`` (:func:`format_labelers`). What a
label then does (hide the post, put it behind a warning, or just show it) is the
reader's setting (:class:`ModerationPrefs`), applied on the reader's side by
:func:`moderate`. The global values are fixed: ``!hide`` and ``!takedown`` hide,
``!warn`` warns; every other value is the reader's to set, with defaults for the
common ones (``spam`` hides; ``porn``, ``sexual``, ``nudity``, ``gore`` and
``graphic-media`` warn; anything else shows).

Operators choose for their own node only. A :class:`Takedown` names an account, the
scopes it covers (:data:`SCOPES`: ``host`` -- no account or writes here; ``serve`` --
absent from this node's views, sync endpoints and firehose, not indexed; ``carry`` -- not
gossiped, served to or taken from peers), a reason and a time.

What this module refuses: an ``atproto-accept-labelers`` header over
:data:`MAX_HEADER_BYTES` or naming more than :data:`MAX_LABELERS` labelers
(:class:`InvalidLabelerHeader`); an unknown scope, an empty or over-long reason, or a
subject that is not a DID (:class:`InvalidTakedown`); a behaviour other than hide,
warn or show (:class:`InvalidPrefs`). Sans-IO: times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import RemoteProtocolError
from .syntax import is_valid_did, validate_datetime, validate_did

__all__ = [
    "ACCEPT_LABELERS",
    "CONTENT_LABELERS",
    "DEFAULT_BEHAVIOURS",
    "MAX_LABELERS",
    "SCOPES",
    "Behaviour",
    "Decision",
    "InvalidLabelerHeader",
    "InvalidPrefs",
    "InvalidTakedown",
    "LabelerPref",
    "ModerationPrefs",
    "Takedown",
    "format_labelers",
    "moderate",
    "parse_accept_labelers",
    "parse_scopes",
]

ACCEPT_LABELERS: Final = "atproto-accept-labelers"
CONTENT_LABELERS: Final = "atproto-content-labelers"
#: Labelers one request may name (atproto's AppView takes 20 too).
MAX_LABELERS: Final = 20
MAX_HEADER_BYTES: Final = 8 * 1024
MAX_REASON_CHARS: Final = 2000

Behaviour = Literal["hide", "warn", "show"]
_BEHAVIOURS: Final = ("hide", "warn", "show")
_RANK: Final = {"show": 0, "warn": 1, "hide": 2}

#: What the global values do; a reader cannot change these.
GLOBAL_BEHAVIOURS: Final[Mapping[str, Behaviour]] = {
    "!hide": "hide",
    "!takedown": "hide",
    "!warn": "warn",
}
#: What other common values do until the reader says otherwise.
DEFAULT_BEHAVIOURS: Final[Mapping[str, Behaviour]] = {
    "spam": "hide",
    "porn": "warn",
    "sexual": "warn",
    "nudity": "warn",
    "gore": "warn",
    "graphic-media": "warn",
}

SCOPES: Final = ("host", "serve", "carry")
Scope = Literal["host", "serve", "carry"]


class InvalidLabelerHeader(RemoteProtocolError):
    """An ``atproto-accept-labelers`` header this node will not act on."""


class InvalidTakedown(RemoteProtocolError):
    """A takedown request that names no account, no known scope, or no reason."""


class InvalidPrefs(RemoteProtocolError):
    """Moderation settings that are not a list of labelers and label behaviours."""


# -- which labelers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelerPref:
    """One labeler a reader subscribes to. ``redact``: this labeler's ``!takedown``
    labels remove the content from the answer instead of only labelling it."""

    did: str
    redact: bool = False

    def to_str(self) -> str:
        return f"{self.did};redact" if self.redact else self.did


def parse_accept_labelers(value: str | None) -> tuple[LabelerPref, ...]:
    """The labelers an ``atproto-accept-labelers`` value names, in order, without
    duplicates: ``did:a, did:b;redact``. Entries that are not DIDs and parameters other
    than ``redact`` are ignored (a newer client may send more), as atproto does."""
    if value is None:
        return ()
    if len(value.encode("utf-8", "replace")) > MAX_HEADER_BYTES:
        raise InvalidLabelerHeader(f"{ACCEPT_LABELERS} is longer than {MAX_HEADER_BYTES} bytes")
    out: dict[str, LabelerPref] = {}
    for entry in value.split(","):
        did, *params = (part.strip() for part in entry.split(";"))
        if not is_valid_did(did) or did in out:
            continue
        out[did] = LabelerPref(did, redact="redact" in params)
    if len(out) > MAX_LABELERS:
        raise InvalidLabelerHeader(f"{ACCEPT_LABELERS}: at most {MAX_LABELERS} labelers")
    return tuple(out.values())


def format_labelers(labelers: Iterable[LabelerPref]) -> str:
    """The header value for these labelers (``atproto-content-labelers`` too)."""
    return ", ".join(pref.to_str() for pref in labelers)


# -- what labels do ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModerationPrefs:
    """A reader's moderation settings: whom to listen to and what each label does."""

    labelers: tuple[LabelerPref, ...] = ()
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for val, behaviour in self.behaviours.items():
            if not isinstance(val, str) or not val or len(val.encode("utf-8")) > 128:
                raise InvalidPrefs(f"label value {val!r} is not a label value")
            if behaviour not in _BEHAVIOURS:
                raise InvalidPrefs(f"{val}: behaviour must be hide, warn or show")
        if len(self.labelers) > MAX_LABELERS:
            raise InvalidPrefs(f"at most {MAX_LABELERS} labelers")

    def behaviour(self, val: str) -> Behaviour:
        fixed = GLOBAL_BEHAVIOURS.get(val)
        if fixed is not None:
            return fixed
        return self.behaviours.get(val) or DEFAULT_BEHAVIOURS.get(val, "show")

    @property
    def header(self) -> str | None:
        """The ``atproto-accept-labelers`` value to send (None: no labelers)."""
        return format_labelers(self.labelers) if self.labelers else None

    def to_json(self) -> dict[str, Any]:
        return {
            "labelers": [{"did": p.did, "redact": p.redact} for p in self.labelers],
            "labels": dict(sorted(self.behaviours.items())),
        }

    @classmethod
    def from_json(cls, data: object) -> ModerationPrefs:
        if not isinstance(data, Mapping):
            raise InvalidPrefs("moderation settings must be an object")
        raw_labelers = data.get("labelers", [])
        raw_labels = data.get("labels", {})
        if not isinstance(raw_labelers, list) or not isinstance(raw_labels, Mapping):
            raise InvalidPrefs("labelers is a list and labels an object")
        labelers: dict[str, LabelerPref] = {}
        for item in raw_labelers:
            if isinstance(item, str):
                item = {"did": item}
            if not isinstance(item, Mapping) or not is_valid_did(item.get("did")):
                raise InvalidPrefs(f"{item!r} is not a labeler DID")
            labelers[item["did"]] = LabelerPref(item["did"], bool(item.get("redact", False)))
        return cls(tuple(labelers.values()), dict(raw_labels))

    def subscribe(self, did: str, *, redact: bool = False) -> ModerationPrefs:
        validate_did(did)
        kept = tuple(p for p in self.labelers if p.did != did)
        return ModerationPrefs((*kept, LabelerPref(did, redact)), self.behaviours)

    def unsubscribe(self, did: str) -> ModerationPrefs:
        return ModerationPrefs(tuple(p for p in self.labelers if p.did != did), self.behaviours)

    def with_behaviour(self, val: str, behaviour: Behaviour) -> ModerationPrefs:
        if val in GLOBAL_BEHAVIOURS:
            raise InvalidPrefs(f"{val} is a global label: it always does {GLOBAL_BEHAVIOURS[val]}")
        return ModerationPrefs(self.labelers, {**self.behaviours, val: behaviour})


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one post or profile: ``action``, and the labels (``val``,
    ``src``) that decided it (every label that hides or warns, strongest first)."""

    action: Behaviour
    because: tuple[tuple[str, str], ...] = ()

    @property
    def hidden(self) -> bool:
        return self.action == "hide"

    @property
    def warned(self) -> bool:
        return self.action == "warn"

    def reason(self) -> str:
        """``spam (did:...)`` style text for a warning or hidden line."""
        return ", ".join(f"{val} ({src})" for val, src in self.because)


def _view_labels(view: Mapping[str, Any]) -> list[Any]:
    """A view's own labels and, for a post, its author's (an account label covers
    everything the account posts)."""
    found: list[Any] = []
    for holder in (view, view.get("author")):
        labels = holder.get("labels") if isinstance(holder, Mapping) else None
        if isinstance(labels, list):  # a view is anyone's JSON: anything else is none
            found += labels
    return found


def moderate(view: Mapping[str, Any], prefs: ModerationPrefs) -> Decision:
    """Decide what a PostView, ProfileView or embedded record is for this reader,
    from the labels the node attached. Labels from labelers the reader does not
    subscribe to are ignored whatever the node sent."""
    trusted = {p.did for p in prefs.labelers}
    rules: list[tuple[int, str, str]] = []
    for label in _view_labels(view):
        if not isinstance(label, Mapping) or label.get("neg"):
            continue
        val, src = label.get("val"), label.get("src")
        if not isinstance(val, str) or src not in trusted:
            continue
        behaviour = prefs.behaviour(val)
        if behaviour != "show":
            rules.append((_RANK[behaviour], val, str(src)))
    if not rules:
        return Decision("show")
    rules.sort(key=lambda r: (-r[0], r[1], r[2]))
    action: Behaviour = "hide" if rules[0][0] == _RANK["hide"] else "warn"
    return Decision(action, tuple(dict.fromkeys((val, src) for _, val, src in rules)))


# -- what a node refuses ---------------------------------------------------------------------


def parse_scopes(value: str | Iterable[str] | None) -> frozenset[Scope]:
    """``"host,serve"`` (or a list) as a set of scopes; None (not given) means all.

    An empty list is an error, not "all": a takedown that names no scope is a mistake
    to report, never a silent full takedown."""
    if value is None:
        return frozenset(SCOPES)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip() for item in items if str(item).strip()}
    if not names:
        raise InvalidTakedown(f"scopes must name at least one of {', '.join(SCOPES)}")
    unknown = names - set(SCOPES)
    if unknown:
        raise InvalidTakedown(f"unknown scope {sorted(unknown)}: scopes are {', '.join(SCOPES)}")
    return frozenset(names)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Takedown:
    """One moderation action of a node on one account, as recorded and published."""

    id: int
    did: str
    scopes: frozenset[Scope]
    reason: str
    created_at: str
    reversed_at: str | None = None
    reverse_reason: str | None = None

    def __post_init__(self) -> None:
        if not is_valid_did(self.did):
            raise InvalidTakedown(f"{self.did!r} is not a DID")
        if not self.scopes or not self.scopes <= set(SCOPES):
            raise InvalidTakedown(f"scopes must be some of {', '.join(SCOPES)}")
        for text, what in ((self.reason, "reason"), (self.reverse_reason, "reverse reason")):
            if text is None and what == "reverse reason":
                continue
            if not isinstance(text, str) or not text.strip():
                raise InvalidTakedown(f"a takedown needs a {what}")
            if len(text) > MAX_REASON_CHARS:
                raise InvalidTakedown(f"{what} is longer than {MAX_REASON_CHARS} characters")
        validate_datetime(self.created_at)
        if self.reversed_at is not None:
            validate_datetime(self.reversed_at)

    @property
    def active(self) -> bool:
        return self.reversed_at is None

    def covers(self, scope: Scope) -> bool:
        return self.active and scope in self.scopes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "did": self.did,
            "action": "takedown",
            "scopes": [s for s in SCOPES if s in self.scopes],
            "reason": self.reason,
            "createdAt": self.created_at,
            "active": self.active,
        }
        if self.reversed_at is not None:
            out["reversedAt"] = self.reversed_at
            out["reverseReason"] = self.reverse_reason
        return out
