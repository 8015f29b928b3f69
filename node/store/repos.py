"""Hosting repositories: accounts' writes become durable signed commits.

:class:`RepoManager` is the one path by which a local repo changes. Per account it
serialises writes (an asyncio lock per DID), builds the commit on a reader thread
(tree work reads blocks from SQLite as it goes), and hands the result to storage,
which group-commits it with other accounts' writes. The head is cached in memory
only after the commit is durable, so a crash never leaves the cache ahead of disk.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.cid import CID
from protocol.commit import CommitEvent
from protocol.errors import RemoteProtocolError, RepoError
from protocol.eventstream import encode_frame
from protocol.identity import IdentityOp, did_for_genesis
from protocol.keys import SigningKey
from protocol.repo import CommitResult, Repo, Write
from protocol.syntax import TidClock

from .sqlite import AccountRow, CommitBatch, HeadMoved, SqliteStorage

__all__ = ["RepoManager", "WriteOutcome", "iso_now"]

_CACHE_REPOS = 256


def iso_now(now: float | None = None) -> str:
    """An atproto datetime with millisecond precision and a Z."""
    t = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    result: CommitResult
    seq: int


class RepoManager:
    """Builds and stores commits for the repos this node hosts."""

    def __init__(
        self,
        storage: SqliteStorage,
        *,
        clock_id: int,
        now: Callable[[], float] = time.time,
    ):
        self.storage = storage
        self._clock = TidClock(clock_id)
        self._now = now
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._cache: OrderedDict[str, Repo] = OrderedDict()
        #: Called with each local commit event once it is durable (federation).
        self.on_commit: Callable[[CommitEvent], None] | None = None

    def lock(self, did: str) -> asyncio.Lock:
        lock = self._locks.get(did)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[did] = lock
        return lock

    def _next_rev(self, after: str | None) -> str:
        if after is not None:
            self._clock.observe(after)
        return self._clock.next(int(self._now() * 1_000_000))

    async def head(self, did: str) -> Repo:
        """The current repo, from the cache or storage."""
        repo = self._cache.get(did)
        if repo is not None:
            self._cache.move_to_end(did)
            return repo
        head = await self.storage.get_head(did)
        if head is None:
            raise RepoError(f"could not find repo for {did}", error="RepoNotFound", status=400)
        repo = await self.storage.run_in_reader(lambda: Repo.load(self.storage, head.head))
        self._remember(repo)
        return repo

    def _remember(self, repo: Repo) -> None:
        self._cache[repo.did] = repo
        self._cache.move_to_end(repo.did)
        while len(self._cache) > _CACHE_REPOS:
            self._cache.popitem(last=False)

    def forget(self, did: str) -> None:
        self._cache.pop(did, None)

    async def create_account(
        self,
        *,
        handle: str,
        email: str | None,
        password_hash: str,
        signing_key: SigningKey,
        rotation_key: SigningKey,
        user_rotation_key: str | None,
        endpoint: str,
    ) -> tuple[str, WriteOutcome]:
        """Make the identity (genesis op) and the empty repo, atomically."""
        rotation = [rotation_key.did_key()]
        if user_rotation_key is not None:
            # The user's own key goes first: it outranks the node's, so the user can
            # later move away (or undo the node's ops) without the node's help.
            rotation.insert(0, user_rotation_key)
        op = IdentityOp.create(
            rotation_keys=rotation,
            signing_key=signing_key.did_key(),
            handle=handle,
            endpoint=endpoint,
            prev=None,
            signer=rotation_key,
        )
        did = did_for_genesis(op)
        rev = self._next_rev(None)
        now = iso_now(self._now())
        result = Repo.create(did, signing_key, rev=rev, time=now, source=self.storage)
        account = AccountRow(
            did=did,
            handle=handle,
            email=email,
            password_hash=password_hash,
            signing_key=signing_key.to_str(),
            rotation_key=rotation_key.to_str(),
            created_at=now,
        )
        batch = self._batch(result, prev_head=None)
        async with self.lock(did):
            seq = await self.storage.create_account(
                account,
                (op.cid, op.to_bytes()),
                batch,
                signing_did_key=signing_key.did_key(),
                endpoint=endpoint,
            )
            self._remember(result.repo)
        return did, WriteOutcome(result, seq)

    async def write(
        self,
        did: str,
        writes: Sequence[Write],
        key: SigningKey,
        *,
        swap_commit: CID | None = None,
        check: Callable[[Repo], None] | None = None,
        validate: bool = True,
    ) -> WriteOutcome:
        """Apply ``writes`` to ``did``'s repo as one commit; returns once durable.

        ``check`` runs against the current head under the account's lock (for
        swapRecord); ``swap_commit`` must equal the head if given."""
        async with self.lock(did):
            repo = await self.head(did)
            if swap_commit is not None and repo.commit_cid != swap_commit:
                raise RemoteProtocolError(
                    f"commit was at {repo.commit_cid}", error="InvalidSwap", status=400
                )
            if check is not None:
                check(repo)
            rev = self._next_rev(repo.rev)
            now = iso_now(self._now())
            result = await self.storage.run_in_reader(
                lambda: repo.apply_writes(writes, key, rev=rev, time=now, validate=validate)
            )
            try:
                seq = await self.storage.apply_commit(self._batch(result, repo.commit_cid))
            except HeadMoved:
                self.forget(did)  # someone else wrote (an import); reload next time
                raise RemoteProtocolError(
                    "the repo changed during the write; retry", error="InvalidSwap"
                ) from None
            self._remember(result.repo)
        if self.on_commit is not None:
            self.on_commit(result.event)
        return WriteOutcome(result, seq)

    @staticmethod
    def _batch(result: CommitResult, prev_head: CID | None) -> CommitBatch:
        event = result.event
        body = event.to_value()

        def frame(seq: int) -> bytes:
            return encode_frame("#commit", {**body, "seq": seq})

        changes = []
        for op in result.ops:
            collection, _, rkey = op.path.partition("/")
            changes.append((collection, rkey, op.cid))
        return CommitBatch(
            did=result.repo.did,
            commit_cid=result.commit_cid,
            rev=result.commit.rev,
            root=result.commit.data,
            prev_head=prev_head,
            blocks=result.blocks,
            record_changes=changes,
            frame_kind="#commit",
            frame=frame,
            since=result.event.since,
        )
