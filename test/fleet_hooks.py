"""Fleet worker hooks for the tests; light imports only, as every worker imports them."""
import os
import signal


def kill_the_worker_of_killer_bags(bag: str) -> None:
    """SIGKILL the worker (as the OOM killer would) on a bag named killer*, before it is
    read."""
    if os.path.basename(os.path.normpath(bag)).startswith('killer'):
        os.kill(os.getpid(), signal.SIGKILL)
