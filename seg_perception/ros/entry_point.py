"""The segmentation_node executable: the stop signals first, everything slow after.

Importing rclpy, the messages, NumPy and OpenCV takes about a second, and a
Ctrl-C in that time used to end in a KeyboardInterrupt traceback. This module
imports nothing slow: it installs the handlers, then imports the node (see
node.run, which skips loading the model when a signal has already arrived).
"""
import signal
import sys


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


def main(args=None) -> int:
    """Entry point of ``ros2 run seg_perception segmentation_node``; returns the exit code."""
    stop = StopSignals()
    try:
        from seg_perception.ros import node     # slow: rclpy, messages, NumPy, OpenCV
        return node.run(stop, args)
    finally:
        stop.restore()


if __name__ == '__main__':
    sys.exit(main())
