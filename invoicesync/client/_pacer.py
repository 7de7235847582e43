"""The pacer: one request rate shared by every request of a client, adapted to Campfire's 429s (AIMD).

Campfire publishes no rate limit, so the pacer learns it. Until the first 429 it does nothing: requests
go out as fast as the caller's parallelism allows. A 429 for a request sent after the last cut starts
pacing, or cuts the pace multiplicatively: to ``decrease`` times the rate at which answers have been
succeeding over the last ``window`` seconds, when that is lower than the pace (while throttled, the
successes come exactly at the server's limit, so this lands just under it instead of compounding
cuts from a pace that was never reached). 429s for requests sent before the last cut (or within a
round trip of it) were caused by the old pace and cut nothing, and so do 429s while nothing has got
through since the last cut: a storm of them (a quota used up elsewhere) cuts once, not to nothing.
After ``forget`` seconds without a 429 the pacer stops pacing, and learns the limit again from the
next 429. Each success then raises the pace additively, by ``increase`` times
the pace set at the last cut per second of successes, so the pace probes upwards again linearly
until the next 429.

Requests wait for a slot: slots are ``1 / pace`` apart, handed out in order. A cut makes slots
handed out under the old pace be handed out again (``generation``), so a burst booked before the
cut does not go out at the old pace. ``Retry-After`` is the earliest moment the throttled request
itself may be sent again; it then takes a slot like any other, so requests that were throttled
together go out one slot apart instead of waking together.

Pure bookkeeping on a clock the caller passes in: no IO, no sleeping, testable without time.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """AIMD pacing of one client's requests; see the module docstring."""

    def __init__(
        self,
        *,
        decrease: float = 0.92,
        increase: float = 0.02,
        window: float = 1.0,
        min_rate: float = 0.2,
        recover: float = 0.5,
        forget: float = 30.0,
    ) -> None:
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.decrease = decrease
        self.increase = increase
        self.window = window
        self.min_rate = min_rate
        self.recover = recover
        self.forget = forget
        self.rate: float | None = None  # requests/s; None: not pacing (no 429 seen yet)
        self.generation = 0  # grows at every cut: slots booked before it are booked again
        self.cuts = 0
        self._next = 0.0  # the earliest time of the next free slot
        self._last_cut = float("-inf")
        self._last_429 = float("-inf")
        self._answered_since_cut = True  # a success since the last cut (a storm of 429s cuts once)
        self._rtt = 0.0  # a moving average of answers' round trips
        self._step = 0.0  # the additive increase, requests/s per second of successes
        self._ceiling = 0.0  # the pace the last cut was from (at most twice the pace it cut to)
        self._started: float | None = None
        self._successes: deque[float] = deque()  # when answers succeeded, within the last window
        self._sends: deque[float] = deque()  # when requests were sent, within the last window

    def reserve(self, now: float) -> tuple[float, int]:
        """Book the next slot: (when to send, the generation it was booked under)."""
        if self._started is None:
            self._started = now
        if self.rate is not None and now - self._last_429 > self.forget:
            self.rate = None  # no 429 for a long while: the limit has gone (or moved far up); learn it again
        if self.rate is None:
            return now, self.generation
        at = max(now, self._next)
        self._next = at + 1.0 / self.rate
        return at, self.generation

    def sent(self, now: float) -> None:
        """A request leaves now."""
        self._sends.append(now)

    def succeeded(self, now: float, sent_at: float) -> None:
        """An answer that was not a 429 (any status: the server took the request), for a request sent at ``sent_at``."""
        self._round_trip(now - sent_at)
        self._answered_since_cut = True
        self._successes.append(now)
        self._forget(now)
        if self.rate is not None and self._step:
            # Per second of answers: half the way back towards the pace that was cut, up to just under it
            # (quickly undoing a cut from an underestimate), then the additive step, probing slowly.
            back = self.recover * (self.decrease * self._ceiling - self.rate)
            self.rate += max(self._step, back) / self.rate

    def throttled(self, now: float, sent_at: float) -> bool:
        """A 429 for a request sent at ``sent_at``; returns whether it cut the pace."""
        self._round_trip(now - sent_at)
        self._last_429 = now
        if sent_at < self._last_cut + self._rtt or not self._answered_since_cut:
            # Sent under the old pace, or before answers to the new pace could show, or nothing has got
            # through since the last cut (a storm of 429s, whatever the pace): already cut for.
            return False
        self._forget(now)
        started = self._started if self._started is not None else now
        span = min(self.window, max(now - started, 1e-3))
        delivered = len(self._successes) / span
        pace = self.rate if self.rate is not None else len(self._sends) / span
        # Never below half the pace in one cut: early on, or after a pause, the window holds too few
        # answers to measure the limit by.
        target = min(pace, max(delivered, pace / 2))
        rate = max(self.min_rate, self.decrease * target)
        self.rate = rate
        # Linear probing back up at a pace of the order of the one that was cut: a cut from an
        # underestimate (answers held back on our side, not by Campfire) is undone within seconds.
        self._step = self.increase * rate
        self._ceiling = min(pace, 2 * rate)
        self._last_cut = now
        self._answered_since_cut = False
        self._next = now + 1.0 / rate
        self.generation += 1
        self.cuts += 1
        return True

    def _round_trip(self, seconds: float) -> None:
        self._rtt = 0.8 * self._rtt + 0.2 * seconds if self._rtt else seconds

    def current(self, now: float) -> float:
        """The rate at which answers have succeeded over the last window (requests/s)."""
        self._forget(now)
        started = self._started if self._started is not None else now
        span = min(self.window, now - started)
        return len(self._successes) / span if span > 0 else 0.0

    def _forget(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._successes, self._sends):
            while times and times[0] <= horizon:
                times.popleft()
