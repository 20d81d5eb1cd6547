"""SecantusDB as a child of the app: `python -m web.mongo_child PARENT_PID PORT <secantusd args>`.

SecantusDB stops cleanly only when its *main thread* gets SIGTERM and a connection then wakes
its accept() thread; web.embedded.Server.stop does both. When the app died, the kernel's death
signal went to the process as a whole, and under load SecantusDB outlived the app about once in
15 crashes. So it runs here, in this process, beside a thread that watches the parent and,
once it is gone, stops SecantusDB the same way (or, failing that within 10 s, exits hard: with
`--sync-on-commit` every commit is on disk already).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time

POLL_S = 0.2
GIVE_UP_S = 10.0


def watch(parent: int, port: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    signal.pthread_kill(main_thread, signal.SIGTERM)
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        # Wakes accept(); refused once SecantusDB has stopped listening.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), POLL_S):
            pass
        time.sleep(POLL_S)
    os._exit(1)


def main() -> None:
    from secantus.cli import main as secantus  # the `embedded` extra

    parent, port, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    threading.Thread(target=watch, args=(parent, port), name="parent watch", daemon=True).start()
    sys.exit(secantus(args))


if __name__ == "__main__":
    main()
