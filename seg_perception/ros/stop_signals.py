"""Stop signals that only set a flag: the node's clean way out of Humble's SIGINT handling."""
import signal


class StopSignals:
    """SIGINT and SIGTERM ask the spin loop to end; they raise nothing.

    rclpy's own handler (Humble) shuts the context down inside the signal handler
    and lets Python raise KeyboardInterrupt wherever the main thread happens to
    be: in the middle of an rclpy object's constructor that leaves a half-built
    Task whose destructor prints a traceback, and the worker thread's next publish
    fails on the dead context. Here a signal only sets a flag; the loop sees it
    within one spin period, stops the worker, then shuts rclpy down.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self._previous = {number: signal.signal(number, self._handle)
                          for number in self.SIGNALS}

    def _handle(self, number, _frame):
        if self.received is None:
            self.received = signal.Signals(number).name

    def restore(self):
        for number, handler in self._previous.items():
            if handler is not None:       # None: installed outside Python, cannot be put back
                signal.signal(number, handler)
