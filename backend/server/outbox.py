"""Publishing job events to the clients that follow them, at each client's own pace.

Results (views, meshes, the end of a job) are written to the jobs folder first and sent
*from disk*, one subscriber at a time, only while that subscriber's ZeroMQ pipe has room
(the ROUTER socket runs with ``ROUTER_MANDATORY`` and a small send high-water mark, so a
full pipe answers ``EAGAIN`` instead of growing). A client that stops reading therefore
costs a cursor, not memory, and a client that asks for a 1 GiB job thirty times gets one
replay. Progress events are ephemeral: sent when there is room, dropped when not.

The worker thread only calls :meth:`Outbox.post`; everything else runs on the socket thread.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
from dataclasses import dataclass
from typing import Any

import zmq

from .jobstore import JobStore

log = logging.getLogger("blend123.outbox")

#: Replies kept per peer while its pipe is full.
MAX_PENDING_REPLIES = 256


@dataclass
class _Subscription:
    cursor: int  # the last sequence number sent
    end_seq: int | None = None  # the job's last event, once known
    blocked: bool = False  # the peer's pipe was full at the last attempt
    fresh: bool = True  # stored events not looked at yet


@dataclass
class _Posted:
    job_id: str
    seq: int
    frames: list[Any] | None  # set for ephemeral events (not on disk)
    ends_job: bool


class Outbox:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._posted: collections.deque[_Posted] = collections.deque()
        self._lock = threading.Lock()
        self._subs: dict[str, dict[bytes, _Subscription]] = {}  # job id -> peer -> state
        self._end_seq: dict[str, int] = {}
        # Replies that met a full pipe, retried in order; a peer that sends requests
        # without reading their replies loses the oldest beyond MAX_PENDING_REPLIES.
        self._replies: dict[bytes, collections.deque[list[Any]]] = {}

    # --- worker thread --------------------------------------------------------------------

    def post(self, job_id: str, seq: int, frames: list[Any] | None, ends_job: bool = False) -> None:
        """A new event: ``frames`` for an ephemeral one, None for one already stored."""
        with self._lock:
            self._posted.append(_Posted(job_id, seq, frames, ends_job))

    # --- socket thread --------------------------------------------------------------------

    def subscribe(self, peer: bytes, job_id: str, after_seq: int, end_seq: int | None = None) -> None:
        """Send ``peer`` the job's stored events after ``after_seq``, then its live ones.

        ``end_seq``: the last event of a job that has ended (None while it runs).
        """
        if end_seq is None:
            end_seq = self._end_seq.get(job_id)
        subs = self._subs.setdefault(job_id, {})
        sub = subs.get(peer)
        if sub is None:
            subs[peer] = _Subscription(after_seq, end_seq)
        else:  # a repeated fetch rewinds the one replay, it does not start another
            sub.cursor, sub.end_seq, sub.fresh = min(sub.cursor, after_seq), end_seq, True

    def reply(self, socket: zmq.Socket, peer: bytes, frames: list[Any]) -> None:
        """Send a reply now, or as soon as the peer's pipe has room (never lost to a
        momentarily full pipe: ZeroMQ's I/O thread drains it within milliseconds)."""
        waiting = self._replies.get(peer)
        if waiting is None and send(socket, peer, frames) is not None:
            return
        waiting = self._replies.setdefault(peer, collections.deque(maxlen=MAX_PENDING_REPLIES))
        waiting.append(frames)

    @property
    def has_pending(self) -> bool:
        return bool(self._replies) or any(sub.blocked for subs in self._subs.values() for sub in subs.values())

    def forget_peer(self, peer: bytes) -> None:
        for subs in self._subs.values():
            subs.pop(peer, None)

    def flush(self, socket: zmq.Socket) -> None:
        """Deliver what was posted and what subscribers are owed, as far as pipes allow."""
        for peer, waiting in list(self._replies.items()):
            while waiting:
                sent = send(socket, peer, waiting[0])
                if sent is None:
                    break
                waiting.popleft()
            if not waiting:
                del self._replies[peer]
        with self._lock:
            posted, self._posted = self._posted, collections.deque()
        # In posting order, so that progress never overtakes the result before it.
        for item in posted:
            subs = self._subs.get(item.job_id, {})
            if item.ends_job:
                self._end_seq[item.job_id] = item.seq
                for sub in subs.values():
                    sub.end_seq = item.seq
            for peer, sub in list(subs.items()):
                if item.frames is None:
                    self._drain(socket, item.job_id, peer, sub, up_to=item.seq)
                elif not sub.blocked:  # a blocked peer gets progress no sooner than its results
                    if send(socket, peer, item.frames) is False:
                        sub.end_seq = sub.cursor
                    elif item.ends_job:
                        sub.cursor = max(sub.cursor, item.seq)
        for job_id, subs in list(self._subs.items()):
            for peer, sub in list(subs.items()):
                if sub.blocked or sub.fresh:
                    self._drain(socket, job_id, peer, sub)
                if sub.end_seq is not None and sub.cursor >= sub.end_seq and not sub.blocked:
                    subs.pop(peer, None)
            if not subs:
                del self._subs[job_id]
        # Remember end points only for jobs someone may still subscribe to soon.
        while len(self._end_seq) > 4096:
            self._end_seq.pop(next(iter(self._end_seq)))

    def subscribers(self, job_id: str) -> set[bytes]:
        return set(self._subs.get(job_id, ()))

    def _drain(self, socket: zmq.Socket, job_id: str, peer: bytes, sub: _Subscription, up_to: int | None = None) -> None:
        if sub.blocked and up_to is not None:
            return  # it is behind anyway: the end-of-turn pass resumes it in order
        sub.blocked = sub.fresh = False
        seqs = [s for s in self.store.event_seqs(job_id, sub.cursor) if up_to is None or s <= up_to]
        for seq in seqs:
            frames = self.store.read_event(job_id, seq)
            if frames is not None:
                sent = send(socket, peer, frames)
                if sent is None:  # pipe full: resume from here on the next turn
                    sub.blocked = True
                    return
                if sent is False:  # the peer is gone: nothing more to send it
                    sub.end_seq = sub.cursor
                    return
            sub.cursor = seq
        if up_to is None and sub.end_seq is not None and sub.cursor < sub.end_seq:
            sub.cursor = sub.end_seq  # the end event was ephemeral or unreadable: nothing more to send


def send(socket: zmq.Socket, peer: bytes, frames: list[Any]) -> bool | None:
    """True when queued, None when the peer's pipe is full, False when the peer is gone."""
    try:
        socket.send_multipart([peer, *frames], zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return None
    except zmq.ZMQError as exc:
        if exc.errno == errno.EHOSTUNREACH:
            return False
        raise
