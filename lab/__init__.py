"""reactor-lab: hot reload (inotify + a prefork reactor server) and heartbeat detection, for real."""

from lab.errors import LabError
from lab.watcher import Change, Watcher

__all__ = ["Change", "LabError", "Watcher"]
__version__ = "0.1.0"
