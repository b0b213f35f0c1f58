"""Fleet worker hooks for the tests; light imports only, as every worker imports them."""
import os
import signal
import time


def kill_the_worker_of_killer_bags(bag: str) -> None:
    """SIGKILL the worker (as the OOM killer would) on a bag named killer*, before it is
    read."""
    if os.path.basename(os.path.normpath(bag)).startswith('killer'):
        os.kill(os.getpid(), signal.SIGKILL)


def slow_down_slow_bags(bag: str) -> None:
    """Take 2 s more over a bag named slow*, so a test can stop the run mid-way."""
    if os.path.basename(os.path.normpath(bag)).startswith('slow'):
        time.sleep(2.0)
