"""One named daemon thread that does a round of work every interval until it is stopped: the
shape of a process's three background threads (routing.dataplane)."""

from __future__ import annotations

import threading

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Subclasses give `name`, `interval()` and `tick()`; `starting()` runs under the lock before
    the thread starts (resources, a blocking first round), `stopped()` after it has ended.

    Each start gets a stop event of its own: a thread that outlives its stop (a round slower
    than the join's bound) is never woken again by a later start, so two never run at once."""

    name = "portier-periodic"
    tick_first = False  # a round at once when the thread starts, or only after an interval

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread unless it runs; safe to call from any thread, any number of times."""
        with self._lock:
            if self.running:
                return
            self._stop = stop = threading.Event()
            self.starting()
            self._thread = threading.Thread(
                target=self._run, args=(stop,), name=self.name, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop after the round under way (the join is bounded: 5 s; a thread still in its round
        then ends on its own, and its resources are released after it)."""
        with self._lock:
            self._stop.set()
            thread = self._thread
            if thread is not None:
                thread.join(timeout=5)
                if thread.is_alive():
                    return  # `running` stays true: a start now would not run a second copy
                self._thread = None
            self.stopped()

    def interval(self) -> float:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError

    def starting(self) -> None:
        return None

    def stopped(self) -> None:
        return None

    def _run(self, stop: threading.Event) -> None:
        if self.tick_first:
            self.tick()
        while not stop.wait(self.interval()):
            self.tick()
