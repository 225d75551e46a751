"""Solutions to the exercises of notebooks/01_inotify.ipynb (try them yourself first!).

Each ``# %% TAG`` block replaces the notebook cell tagged ``TAG``; tests/test_notebooks.py runs
the notebook with them and expects every check cell to pass.
"""

# %% exercise-wanted
import os.path

EDITOR_FILES = (".#", "#")  # Emacs lock and autosave files start with these


def wanted(name: str) -> bool:
    if name.startswith(EDITOR_FILES) or name == "4913":  # 4913: vim's probe file
        return False
    # the real suffix is after the LAST dot; backups (~), swap files (.swp) and .orig end otherwise
    return os.path.splitext(name)[1] == ".py"


# %% exercise-due
def due_at(first: float, last: float, quiet: float, max_wait: float) -> float:
    # quiet time after the LAST record, but never later than max_wait after the first
    return min(last + quiet, first + max_wait)
