"""Solutions to the exercises of notebooks/02_hot_reload.ipynb (try them yourself first!).

Each ``# %% TAG`` block replaces the notebook cell tagged ``TAG``; tests/test_notebooks.py runs
the notebook with them and expects every check cell to pass.
"""

# %% exercise-phases
from lab.events import RELOAD_PHASES

# Each step ends at a phase: fork is seen -> forked, import forked -> ready, switch ready -> serving,
# drain serving -> old_gone.
STEPS = {end.step: (start.key, end.key) for start, end in zip(RELOAD_PHASES, RELOAD_PHASES[1:])}


def phase_durations(done: dict) -> dict[str, float]:
    # each phase is a time on the shared monotonic clock: a step is the gap between two of them
    phases = done["phases"]
    return {step: (phases[end] - phases[start]) * 1000 for step, (start, end) in STEPS.items()}


# %% exercise-signal
import os
import signal


def send_reload(pidfile: str) -> int:
    # the first field, as the tutorial's pidGet(...)[0]; int() raises on anything that is not a pid
    with open(pidfile) as f:
        pid = int(f.read().split()[0])
    os.kill(pid, signal.SIGUSR1)
    return pid
