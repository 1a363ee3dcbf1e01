"""Start reading a stream in a background thread before it is needed.

Opening a Ray Data iterator starts a new execution: listing files, scheduling read tasks,
often starting worker processes. On the 2-CPU test machine that took 9-20 s per epoch, during
which training waited. `ReadAhead` opens the next stream while the current one is still being
trained on and keeps at most ``depth`` items ahead, so the wait overlaps with compute and the
memory held stays bounded.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class ReadAhead(Generic[T]):
    """Iterates ``open_stream()`` in a daemon thread; iterate this object to consume it.

    Items arrive in the stream's order. An exception raised by the stream is raised again in
    the consumer, after the items before it. `close()` (also called when the consumer stops
    early through ``with``) stops the thread at its next item.
    """

    def __init__(self, open_stream: Callable[[], Iterable[T]], depth: int = 2, name: str = "read-ahead") -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(open_stream,), name=name, daemon=True)
        self._thread.start()

    def _run(self, open_stream: Callable[[], Iterable[T]]) -> None:
        try:
            for item in open_stream():
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
            return
        self._put(_DONE)

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> "ReadAhead[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
