"""Example apps for ``python -m lab serve``: ``lab.examples.hello`` is the tutorial's demo."""
