"""Solutions to the exercises of notebooks/03_heartbeat.ipynb (try them yourself first!).

Each ``# %% TAG`` block replaces the notebook cell tagged ``TAG``; tests/test_notebooks.py runs
the notebook with them and expects every check cell to pass.
"""

# %% exercise-tracker
from collections import OrderedDict


class MyTracker:
    """Connections in order of last activity: the server's clock never goes backwards, so moving
    a touched key to the end keeps the dict sorted, and the silent ones are always at the front.
    O(1) per message and per closed connection; a check stops at the first key still in time."""

    def __init__(self, idle: float, interval: float):
        self.idle, self.interval = idle, interval
        self.last: OrderedDict = OrderedDict()

    def touch(self, key, now):
        self.last[key] = now
        self.last.move_to_end(key)

    def forget(self, key):
        self.last.pop(key, None)

    def expired(self, now):
        out = []
        while self.last:
            key, last = next(iter(self.last.items()))
            if last + self.idle > now:
                break
            out.append(self.last.popitem(last=False))
        return out

    def next_check(self, now):
        if not self.last:
            return None
        # Exactly when the oldest can expire, but not sooner than one interval after the last
        # check time asked: a server with many connections then wakes at most once per interval.
        oldest = next(iter(self.last.values()))
        return max(oldest + self.idle, min(now + self.interval, oldest + self.idle + self.interval))

    def __len__(self):
        return len(self.last)
