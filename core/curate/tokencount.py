"""The editor's token counter, never waited for: the base model's tokenizer is loaded once per server process
in a background thread, shared by every session, and until it is ready (or when it cannot be loaded) the
count is the word-count estimate, labelled as one. Loading it took 5-53 s on a busy machine; an annotator
must not wait on a model to edit text.
"""
from __future__ import annotations

import threading
from typing import Callable

from core.curate import hints

LOADING_LABEL = "estimated from word count while the base model's tokenizer loads"


class BackgroundCounter:
    """``current()`` answers at once: the estimate while ``loader`` runs in its thread, then its result."""

    def __init__(self, loader: Callable[[], tuple[Callable[[str], int], str]]):
        self._loader = loader
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._result: tuple[Callable[[str], int], str] | None = None

    def _load(self) -> None:
        try:
            result = self._loader()
        except Exception as err:  # noqa: BLE001 - any failure leaves the estimate in place, and says why
            result = (hints.estimate_tokens, f"estimated from word count (base model tokenizer unavailable: {err})")
        self._result = result

    def current(self) -> tuple[Callable[[str], int], str, bool]:
        """(count_tokens, label, exact): starts the load on the first call; never blocks on it."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, name="tokenizer-load", daemon=True)
                self._thread.start()
        result = self._result
        if result is None:
            return hints.estimate_tokens, LOADING_LABEL, False
        return result[0], result[1], result[0] is not hints.estimate_tokens

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the load to finish (tests, the CLI); True when it has."""
        self.current()
        self._thread.join(timeout)
        return self._result is not None


_shared = BackgroundCounter(lambda: hints.default_token_counter())


def shared_counter() -> BackgroundCounter:
    """The one counter of this server process."""
    return _shared


def current_token_counter() -> tuple[Callable[[str], int], str, bool]:
    """(count_tokens, label, exact) of this server process's shared counter, at once."""
    return _shared.current()
