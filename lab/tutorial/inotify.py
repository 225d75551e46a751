r"""The tutorial's ``Inotify`` class (§2) and its server's ``watchEvent`` callback, line by line.

The PHP, abridged to what runs (the whole class is in the tutorial, §2 实现热加载)::

    public function __construct($watchPath, callable $watchHandler,
                                $watchMask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVE) {
        $this->fd = inotify_init(); ... $this->watch();
    }
    protected function _watch($path) {
        $wd = inotify_add_watch($this->fd, $path, $this->watchMask);   // once ...
        $this->bind($wd, $path);
        if (is_dir($path)) {
            $wd = inotify_add_watch($this->fd, $path, $this->watchMask); // ... and twice
            $this->bind($wd, $path);
            foreach (scandir($path) as $file) { ... if (is_dir($file)) $this->_watch($file); }
        }
    }
    public function start() {
        swoole_event_add($this->fd, function ($fp) {
            $events = inotify_read($fp);
            foreach ($events as $event) {
                if ($event['mask'] == IN_IGNORED) continue;
                $fileType = strchr($event['name'], '.');
                if (!isset($this->fileTypes[$fileType])) continue;
                if ($this->doing) continue;
                swoole_timer_after(100, function () use ($event) {
                    call_user_func_array($this->watchHandler, [$event]);
                    $this->doing = false;
                });
                $this->doing = true;
                break;
            }
        });
    }
    public function stop() { swoole_event_del($this->fd); fclose($this->fd); }

``swoole_event_add`` is ``loop.add_reader``, ``swoole_timer_after(100, f)`` is
``loop.call_later(0.1, f)``: the class runs on an asyncio loop (the notebook kernel's, or the
tutorial server's master). Weak spots, kept on purpose: the tree is walked at start only (a new
directory is never watched), the type is everything from the *first* dot, a directory is watched
twice, a record arriving while ``doing`` is set is dropped, and so is the rest of its batch after
the ``break``; the handler gets the first record of a burst only.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

from inotify_simple import INotify, flags

IN_MOVE = flags.MOVED_FROM | flags.MOVED_TO  # PHP's IN_MOVE, as in <sys/inotify.h>
DEFAULT_MASK = flags.CREATE | flags.DELETE | flags.MODIFY | IN_MOVE
DELAY = 0.1  # swoole_timer_after(100, ...)


def strchr(haystack: str, needle: str) -> str | None:
    """PHP's ``strchr``: the rest of ``haystack`` from the FIRST ``needle``, or false (None)."""
    at = haystack.find(needle)
    return None if at < 0 else haystack[at:]


class Inotify:
    """``Willyin\\IO\\Tools\\Inotify``; ``handler(event)`` gets a dict like ``inotify_read``'s."""

    def __init__(
        self,
        watch_path: str | os.PathLike[str],
        watch_handler: Callable[[dict], Any],
        watch_mask: int = DEFAULT_MASK,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.fd = INotify()
        self.watch_path = os.fspath(watch_path)
        self.watch_mask = watch_mask
        self.watch_handler = watch_handler
        self.doing = False
        self.file_types = {".php": True}
        self.wd_path: dict[int, str] = {}
        self.path_wd: dict[str, int] = {}
        self.loop = loop
        self.add_watch_calls = 0  # counted: the PHP calls inotify_add_watch twice per directory
        self.records = self.filtered = self.dropped = self.delivered = 0
        self.watch()

    def add_file_type(self, type_: str) -> None:
        self.file_types["." + type_.strip(".")] = True

    def add_file_types(self, types: list[str]) -> None:
        for type_ in types:
            self.add_file_type(type_)

    def watch(self) -> None:
        self._watch(self.watch_path)

    def _add_watch(self, path: str) -> int | bool:
        self.add_watch_calls += 1
        try:
            return self.fd.add_watch(path, self.watch_mask)
        except OSError:
            return False  # PHP's inotify_add_watch returns false (with a warning)

    def _watch(self, path: str) -> bool:
        wd = self._add_watch(path)
        if wd is False:
            return False
        self.bind(wd, path)
        if os.path.isdir(path):
            wd = self._add_watch(path)  # the second add_watch: the kernel returns the same wd
            if wd is False:
                return False
            self.bind(wd, path)
            for file in sorted(os.listdir(path)):  # scandir() in PHP is sorted too
                file = path + os.sep + file
                if os.path.isdir(file):
                    self._watch(file)  # recursion, at start only
        return True

    def clear_watch(self) -> None:
        for wd in self.wd_path:
            try:
                self.fd.rm_watch(wd)  # @inotify_rm_watch: errors silenced
            except OSError:
                pass
        self.wd_path, self.path_wd = {}, {}

    def bind(self, wd: int, path: str) -> None:
        self.path_wd[path] = wd
        self.wd_path[wd] = path

    def unbind(self, wd: int, path: str | None = None) -> None:
        self.wd_path.pop(wd, None)
        if path is not None:
            self.path_wd.pop(path, None)

    def start(self) -> None:
        loop = self.loop or asyncio.get_running_loop()
        loop.add_reader(self.fd.fileno(), self._on_readable, loop)  # swoole_event_add

    def _on_readable(self, loop: asyncio.AbstractEventLoop) -> None:
        events = [{"wd": e.wd, "mask": e.mask, "cookie": e.cookie, "name": e.name} for e in self.fd.read(timeout=0)]
        self.records += len(events)
        for n, event in enumerate(events):
            if event["mask"] == flags.IGNORED:
                self.filtered += 1
                continue
            file_type = strchr(event["name"], ".")
            if file_type is None or not self.file_types.get(file_type):  # isset($this->fileTypes[$fileType])
                self.filtered += 1
                continue
            if self.doing:
                self.dropped += 1
                continue
            loop.call_later(DELAY, self._fire, event)  # swoole_timer_after(100, ...)
            self.doing = True
            self.dropped += len(events) - n - 1  # `break`: the rest of this batch is never looked at
            break

    def _fire(self, event: dict) -> None:
        self.delivered += 1
        self.watch_handler(event)  # call_user_func_array($this->watchHandler, [$event])
        self.doing = False

    def stop(self) -> None:
        (self.loop or asyncio.get_event_loop()).remove_reader(self.fd.fileno())  # swoole_event_del
        self.fd.close()  # fclose

    def get_watched_file_count(self) -> int:
        return len(self.wd_path)


def action(mask: int) -> str:
    """The server's ``switch ($event['mask'])``: equality, so ``IN_MOVE`` (two bits) never matches
    a record (each has one of them), and neither does anything with ``IN_ISDIR`` set::

        $action = 'file:';
        switch ($event['mask']) {
            case IN_CREATE: $action = 'IN_CREATE'; break;
            case IN_DELETE: $action = 'IN_DELETE'; break;
            case \\IN_MODIFY: $action = 'IN_MODIF'; break;
            case \\IN_MOVE: $action = 'IN_MOVE'; break;
        }
    """
    return {flags.CREATE: "IN_CREATE", flags.DELETE: "IN_DELETE", flags.MODIFY: "IN_MODIF", IN_MOVE: "IN_MOVE"}.get(
        mask, "file:"
    )


def watch_event(master_pid: Callable[[], int], log: Callable[[str], Any] = print) -> Callable[[dict], None]:
    """``watchEvent()``: log the action and send ``SIGUSR1`` to the master::

    debug('worker reloaded by inotify :'.$action." : ".$event['name']);
    posix_kill((pidGet($this->config['masterPidFiles']))[0], SIGUSR1);
    """

    def handler(event: dict) -> None:
        log(f"worker reloaded by inotify :{action(event['mask'])} : {event['name']}")
        os.kill(master_pid(), signal.SIGUSR1)

    return handler
