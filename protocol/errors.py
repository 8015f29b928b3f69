"""The one exception family of skyfed.

Split the h11 way:

* :class:`LocalProtocolError` -- *we* got it wrong: code in this process asked the
  protocol layer for something impossible (signing with a public-only key, building a
  commit with a malformed DID it made up itself). It is a bug here, not an answer for
  a peer.
* :class:`RemoteProtocolError` -- the peer or client sent something bad. It carries
  what to answer with: the XRPC error name (``error``) and the HTTP status
  (``status``), so the IO shell can reply without a table of its own.

Every decoder and validator in ``protocol/`` raises only members of this family;
third-party exceptions are wrapped where they enter (``raise ... from e``).
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "IdentityError",
    "InvalidCommit",
    "InvalidLabel",
    "InvalidRecord",
    "InvalidSignature",
    "InvalidSyntax",
    "LocalProtocolError",
    "NegentropyError",
    "RemoteProtocolError",
    "RepoError",
    "SkyfedError",
]


class SkyfedError(Exception):
    """Root of every error skyfed raises on purpose."""


class LocalProtocolError(SkyfedError):
    """This process misused the protocol layer: a bug here, not a peer's fault."""


class RemoteProtocolError(SkyfedError):
    """Input from outside (a client or a peer) is invalid.

    ``error`` is the XRPC error name to answer with and ``status`` the HTTP status.
    Subclasses set sensible defaults; a raise site may override either.
    """

    error: str = "InvalidRequest"
    status: int = 400

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, error={self.error!r}, status={self.status})"
        )


class InvalidSyntax(RemoteProtocolError):
    """An identifier (DID, handle, NSID, TID, record key, AT-URI, ...) is malformed."""


class DecodeError(RemoteProtocolError):
    """Bytes are not canonical skyfed msgpack (or not the structure expected)."""


class InvalidRecord(RemoteProtocolError):
    """A record breaks its lexicon. The message names the field and the rule."""

    error = "InvalidRecord"

    def __init__(self, message: str, *, field: str = "", error: str | None = None):
        super().__init__(f"{field}: {message}" if field else message, error=error)
        self.field = field


class InvalidSignature(RemoteProtocolError):
    """A signature does not verify against the key it must verify against."""

    error = "InvalidSignature"


class InvalidCommit(RemoteProtocolError):
    """A commit or commit event is inconsistent (bad rev, wrong root, missing blocks)."""

    error = "InvalidCommit"


class RepoError(RemoteProtocolError):
    """A repository operation cannot be done (record missing, duplicate create, ...)."""

    error = "InvalidRequest"


class IdentityError(RemoteProtocolError):
    """An identity operation or log is invalid (bad chain, wrong key, tombstoned)."""

    error = "InvalidIdentity"


class InvalidLabel(RemoteProtocolError):
    """A moderation label is malformed or its signature does not verify."""

    error = "InvalidLabel"


class NegentropyError(RemoteProtocolError):
    """A negentropy message is malformed or breaks the protocol."""

    error = "InvalidNegentropyMessage"
