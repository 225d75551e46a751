"""lab.playground drives a real server subprocess: edits reload it, clients count, nothing is left."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.events import Kind
from lab.pidfile import is_alive
from lab.playground import Lab, sweep_scratch, wait_until

OLD, NEW = 'text = "hello world client"', 'text = "hello, reloaded"'


@pytest.fixture
def lab():
    with Lab(workers=2) as running:
        yield running


def test_an_edit_reloads_the_server_without_a_failed_request(lab):
    assert lab.request("hi") == "hello world client"
    assert lab.address[0] == "127.0.0.1"
    load = lab.load(threads=2, duration=30, pause=0.002)
    wait_until(lambda: load.ok > 20, what="the load's first answers")
    lab.replace("hello.py", OLD, NEW)
    done = lab.wait_for(Kind.RELOAD_DONE)
    assert done["generation"] == 2 and set(done["phases"]) >= {"seen", "forked", "ready", "old_gone"}
    assert lab.request() == "hello, reloaded"
    assert not list(lab.app_dir.glob("*.tmp")) and oct(lab.path("hello.py").stat().st_mode)[-3:] == "644"
    assert not lab.of(Kind.RELOAD_FAILED)  # the save is atomic: no reload sees a half-written file
    load.stop()
    assert load.failed == 0 and load.ok > 20, load.errors
    kinds = [e["kind"] for e in lab.history]
    last_done = len(kinds) - kinds[::-1].index(Kind.RELOAD_DONE)
    assert kinds.index(Kind.LAB_EDIT) < kinds.index(Kind.WATCH_CHANGE) < last_done


def test_a_broken_edit_fails_the_reload_and_the_old_code_keeps_serving(lab):
    lab.replace("hello.py", OLD, 'text = "unclosed')
    with pytest.raises(LabError, match="reload failed"):
        lab.wait_for(Kind.RELOAD_DONE, timeout=10)
    assert "SyntaxError" in lab.wait_for(Kind.RELOAD_FAILED)["traceback"]
    assert lab.request() == "hello world client"


def test_signals_reload_and_a_killed_worker_is_replaced(lab):
    lab.reload()
    assert lab.wait_for(Kind.RELOAD_DONE)["trigger"] in ("signal", "SIGUSR1")  # a name or the signal
    before = lab.workers()
    killed = lab.kill_worker()
    assert lab.wait_for(Kind.WORKER_EXIT)["pid"] == killed
    replacement = lab.wait_for(Kind.WORKER_READY)
    assert replacement["pid"] not in before
    assert sorted(lab.workers()) == sorted(set(before) - {killed} | {replacement["pid"]})
    assert lab.request() == "hello world client"


def test_await_until_lets_the_event_loop_run(lab):
    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        lab.reload()
        event = await lab.until(Kind.RELOAD_DONE)
        task.cancel()
        return event, ticks

    event, ticks = asyncio.run(scenario())
    assert event["generation"] == 2 and ticks > 1


def test_stop_is_graceful_and_close_removes_everything():
    lab = Lab(workers=2)
    workers = lab.workers()
    assert len(workers) == 2 and lab.pidfile.exists()
    assert lab.stop() == 0
    assert not lab.pidfile.exists() and not any(is_alive(p) for p in workers)
    assert lab.history[-1]["kind"] == Kind.SERVER_STOP
    lab.close()
    assert not lab.root.exists()


def test_a_forgotten_lab_is_stopped_by_the_garbage_collector():
    lab = Lab(workers=1)
    pid, root = lab.pid, lab.root
    del lab
    gc.collect()
    assert not is_alive(pid) and not root.exists()


def test_the_server_dies_with_the_process_that_started_it_and_the_next_lab_sweeps_its_folder(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from lab.playground import Lab
        lab = Lab(workers=1)
        print(lab.root, lab.pid, *lab.workers(), flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its scratch folder: under tmp_path
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        root, *pids = kernel.stdout.readline().split()
        pids = [int(p) for p in pids]
        assert len(pids) == 2 and all(is_alive(p) for p in pids)
        kernel.kill()  # SIGKILL: no atexit, no finalizer runs; only the kernel's own cleanup
        kernel.wait()
        wait_until(lambda: not any(is_alive(p) for p in pids), timeout=15, what="the orphaned server's exit")
        assert Path(root).is_dir(), "left behind: nothing of the kernel ran"
        assert sweep_scratch(str(tmp_path)) == [Path(root)], "what a new Lab() sweeps"
    finally:
        kernel.kill()
        kernel.wait()
        kernel.stdout.close()


def test_the_heartbeat_closes_a_silent_client_but_not_a_chatty_one():
    with Lab(workers=1, heartbeat_idle=0.5, heartbeat_interval=0.1) as lab:
        chatty = lab.chatty(every=0.1, duration=30)
        silent = lab.silent()
        assert silent.wait_closed(timeout=10)
        assert lab.wait_for(Kind.CONN_CLOSE, reason="idle")["idle"] >= 0.5
        ok = chatty.ok
        wait_until(lambda: chatty.ok > ok + 3, what="the chatty client's answers after the idle close")
        chatty.stop()
        assert chatty.failed == 0 and not chatty.closed_by_server


def test_a_slow_reader_gets_every_answer(lab):
    reader = lab.slow_reader(requests=3000, chunk=512, pause=0.001)
    reader.join(timeout=30)
    assert (reader.ok, reader.failed) == (3000, 0)


def test_bad_input_is_a_clear_error(lab, tmp_path):
    with pytest.raises(LabError, match="no app at"):
        Lab(tmp_path / "missing.py")
    with pytest.raises(LabError, match="is not in hello.py"):
        lab.replace("hello.py", "no such text", "x")
    with pytest.raises(LabError, match="outside the app directory"):
        lab.edit("../events.jsonl", "x")
    with pytest.raises(LabError, match="no file 'nope.py'"):
        lab.read("nope.py")


def test_an_app_that_cannot_start_is_a_clear_error_and_leaves_nothing(tmp_path):
    app = tmp_path / "broken.py"
    app.write_text("import no_such_module_anywhere\n")
    lab = Lab(app, workers=1, start=False)
    try:
        with pytest.raises(LabError, match="no_such_module_anywhere"):
            lab.start()
        assert not lab.running
        with pytest.raises(LabError, match="not running"):
            lab.request()
    finally:
        lab.close()


def test_signals_need_a_running_server():
    lab = Lab(workers=1, start=False)
    try:
        with pytest.raises(LabError, match="not running"):
            lab.send_signal(signal.SIGUSR1)
    finally:
        lab.close()
