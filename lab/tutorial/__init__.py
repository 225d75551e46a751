"""The tutorial's own code, ported line by line from its PHP, weak spots included: run it to see them.

* ``lab.tutorial.inotify`` — its ``Inotify`` class (§2) with ``start()``, the ``doing`` flag and
  the 100 ms timer, and the server's ``watchEvent`` callback with its mask switch;
* ``lab.tutorial.heartbeat`` — its per-message timer (§3), ``time()`` in whole seconds;
* ``lab.tutorial.server`` — a small prefork server whose reload kills every worker and forks new
  ones, with both of the above (``python -m lab.tutorial.server --help``).

These are teaching parts, measured against the lab's own in the notebooks; never use them to serve.
Each docstring quotes the PHP it ports. Counters (``dropped``, ``created`` ...) are the only
additions: they count what the PHP does silently.
"""
