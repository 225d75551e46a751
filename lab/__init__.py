"""reactor-lab: hot reload (inotify + a prefork reactor server) and heartbeat detection, for real."""

from lab.errors import LabError

__all__ = ["LabError"]
__version__ = "0.1.0"
