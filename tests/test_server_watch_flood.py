"""A serving, watching master under a flood of deletions: it still hears SIGTERM.

Deleting 200,000 watched files once blocked the master for over 40 s (the watcher forgot each
file with a search of its directory's list, and interpreted every queued record in one call), so
SIGTERM went unheard. Now each poll interprets a bounded slice and the master goes back to its
loop, where signals are handled, between slices.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from lab.events import Kind

FILES = 80_000  # before the fix: exit 9 s after SIGTERM at 50,000, 50 s at 80,000; now < 1 s
# Generous for a loaded machine; before the fix, exit came only after the whole quadratic batch.
EXIT_DEADLINE = 10.0


def test_sigterm_during_a_flood_of_deletions_stops_the_server(serve, app_dir, tmp_path: Path):
    root = tmp_path / "watched"
    root.mkdir()
    for i in range(FILES):
        os.close(os.open(root / f"f{i:06d}.py", os.O_CREAT | os.O_WRONLY, 0o644))
    # Reverse order of the directory listing (the order the watcher's snapshot was built in):
    # the worst case for a list, the same work as any order for a hash table.
    paths = [entry.path for entry in os.scandir(root)][::-1]
    server = serve(app_dir=app_dir, workers=1, args=("--watch", str(root)))
    for path in paths:
        os.unlink(path)
    server.signal(signal.SIGTERM)  # the master is still busy with the deletions
    try:
        assert server.proc.wait(EXIT_DEADLINE) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"SIGTERM unheard for {EXIT_DEADLINE} s after {FILES} deletions; {server.stderr()[-2000:]}"
        ) from None
    assert server.find(Kind.SERVER_STOPPING, graceful=True)
