"""SIGINT and SIGTERM as a request to stop, not an exception: a flag the work loop reads.

The node's spin loop and bag-eval's message loop both check it between two units of work, so a
stop never lands halfway through publishing a batch or writing a bag: the node stops its worker
and shuts rclpy down in order (Humble's own SIGINT handler shuts the context down inside the
handler and raises KeyboardInterrupt wherever the main thread is, once inside an rclpy
constructor), and bag-eval closes its output bag and writes the partial report.
"""
from __future__ import annotations

import signal
from typing import Optional


class StopSignals:
    """Installed on creation (or as a context manager); ``received`` / calling it names the
    first signal that arrived, None before.

    ``second_interrupts``: a second signal raises KeyboardInterrupt, for a command whose user
    wants out now; without it (the node, where ``ros2 launch`` forwards Ctrl-C and the terminal
    sends it too) a second signal only sets the flag again.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, second_interrupts: bool = False):
        self.received: Optional[str] = None
        self.second_interrupts = second_interrupts
        self._previous = {number: signal.signal(number, self._handle)
                          for number in self.SIGNALS}

    def __enter__(self) -> 'StopSignals':
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    def __call__(self) -> Optional[str]:
        return self.received

    def _handle(self, number, _frame) -> None:
        if self.received is not None and self.second_interrupts:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal.Signals(number).name

    def restore(self) -> None:
        """Put the previous handlers back."""
        for number, handler in self._previous.items():
            if handler is not None:       # None: installed outside Python, cannot be put back
                signal.signal(number, handler)
        self._previous = {}
