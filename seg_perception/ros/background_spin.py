"""An executor spun on a thread of its own, stopped and joined on demand.

For the benchmarks' and tests' client nodes, which run beside a main thread that does
the measuring. ``threading.Thread(target=executor.spin)`` is not enough: Humble's
``Executor.shutdown`` does not always wake a thread blocked in its wait set with no
timeout, and a daemon thread still inside rclpy's C++ wait when the interpreter exits
aborts the process ("terminate called without an active exception"). Spinning with a
short timeout and checking a flag lets ``stop`` end the thread for certain.
"""
import threading

from rclpy.executors import Executor


class BackgroundSpin:
    """Spin ``executor`` on a daemon thread until ``stop()``."""

    def __init__(self, executor: Executor, period_s: float = 0.05):
        self.executor = executor
        self.period_s = period_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, name='background-spin', daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        context = self.executor.context
        while not self._stop.is_set() and context.ok():
            try:
                self.executor.spin_once(timeout_sec=self.period_s)
            except Exception:  # noqa: BLE001 - the context or a node went away under us
                if self._stop.is_set() or not context.ok():
                    return
                raise

    def stop(self, timeout_s: float = 10.0) -> bool:
        """End the thread; then shut the executor down. True when the thread ended."""
        self._stop.set()
        self.thread.join(timeout_s)
        self.executor.shutdown(timeout_sec=timeout_s)
        return not self.thread.is_alive()
