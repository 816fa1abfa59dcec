"""Imported only inside the multiprocessing fork server that `sandbox` starts (as its preload).

The fork server must outlive a process-group SIGTERM (dumb-init and shells forward the stop signal
to the whole group): if it died, every job child still running would be reported as exited (255)
although it is still computing. It already ignores SIGINT; this makes it ignore SIGTERM too. It
still exits when the worker does (it watches a pipe from the worker) and on SIGKILL.
"""

from __future__ import annotations

import signal

import killsafe_worker.sandbox  # noqa: F401 (preloaded so each forked job child starts warm)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
