"""Imported only inside the multiprocessing fork server that `sandbox` starts (as its preload).

The fork server must outlive a process-group SIGTERM (dumb-init and shells forward the stop signal
to the whole group): if it died, every job child still running would be reported as exited (255)
although it is still computing. It already ignores SIGINT; this makes it ignore SIGTERM too.

It must not outlive the worker, though: left alone it keeps running after a SIGKILLed worker (and
so does every job child it forked, and the resource tracker that waits for them), burning CPU for
jobs that another worker is already re-running. So it asks the kernel for SIGKILL when the worker
dies (PR_SET_PDEATHSIG), and exits at once if the worker is already gone; its job children do the
same towards it (sandbox._child_main), so the whole tree dies with the worker.
"""

from __future__ import annotations

import os
import signal

from killsafe_worker import sandbox

_worker = os.getppid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sandbox.die_with_parent()
if os.getppid() != _worker:  # the worker died before the request above took effect
    os._exit(1)
