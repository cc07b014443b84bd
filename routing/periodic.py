"""One named daemon thread that does a round of work every interval until it is stopped: the
shape of a process's three background threads (routing.dataplane)."""

from __future__ import annotations

import threading

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Subclasses give `name`, `interval()` and `tick()`; `starting()` runs under the lock before
    the thread starts (resources, a blocking first round), `stopped()` after it has ended."""

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
            self._stop.clear()
            self.starting()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after the round under way (the join is bounded: 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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

    def _run(self) -> None:
        if self.tick_first:
            self.tick()
        while not self._stop.wait(self.interval()):
            self.tick()
