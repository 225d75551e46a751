"""``--preload``: the master imports the heavy, unchanging modules once, before it forks; every
generation inherits them and imports only the app. Real processes, a stand-in heavy module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import ServerProcess, run_cli, wait_until, write_app

from lab import preload as preload_module
from lab.config import Config
from lab.errors import LabError
from lab.pidfile import is_alive
from lab.preload import AUTO, discover

# A stand-in for numpy: it records which process imported it. The app answers with that pid, its
# own version and its own pid, so a test sees who imported what.
HEAVY = "import os\n\nIMPORTED_BY = os.getpid()\nVERSION = {version!r}\n"
APP = """\
import os

import heavy

TEXT = {text!r}


def on_receive(server, conn, data):
    server.send(conn, f"{{TEXT}} {{heavy.VERSION}} {{heavy.IMPORTED_BY}} {{os.getpid()}}\\n".encode())
"""


def write_heavy(app_dir: Path, version: str) -> Path:
    path = app_dir / "heavy.py"
    path.write_text(HEAVY.format(version=version))
    return path


@pytest.fixture
def heavy_app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    write_heavy(directory, "h1")
    write_app(directory, "v1", source=APP)
    return directory


def answer(server) -> tuple[str, str, int, int]:
    text, version, imported_by, worker = server.ask().split()
    return text, version, int(imported_by), int(worker)


def serve_fails(tmp_path: Path, app_dir: Path, *preload: str) -> str:
    """``serve --preload ...`` that must refuse to start: its one line on stderr."""
    pidfile = tmp_path / "refused.pid"
    result = run_cli(
        "serve",
        "app",
        "--app-dir",
        str(app_dir),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--pidfile",
        str(pidfile),
        *(a for m in preload for a in ("--preload", m)),
    )
    assert result.returncode == 2, result.stderr
    assert not pidfile.exists(), "a refused start leaves no pid file"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_preloaded_modules_come_from_the_master_and_the_app_still_reloads(serve, heavy_app):
    server = serve(app_dir=heavy_app, args=("--preload", "heavy", "--watch", str(heavy_app)))
    done = server.wait_event("preload.done")
    assert done["modules"] == ["heavy"] and done["files"] >= 1
    text, version, imported_by, worker = answer(server)
    assert (text, version) == ("v1", "h1")
    assert imported_by == server.pid != worker, "imported once, by the master, before the fork"
    write_app(heavy_app, "v2", source=APP)
    server.wait_event("reload.done", generation=2)
    text, _, imported_by, worker = answer(server)
    assert text == "v2", "the app's own code is reloaded"
    assert imported_by == server.pid and worker in server.worker_pids(2), "the new generation inherits it"
    assert not server.find("upgrade.start"), "an edit of the app is not a preloaded module's: a reload"


def test_a_stale_pyc_of_a_preloaded_module_is_never_used(serve, heavy_app):
    # An edit of the same size within the second of the last one: Python's .pyc check (mtime in
    # whole seconds, size) would take the old version; the master compiles the app's modules anew.
    heavy = heavy_app / "heavy.py"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(heavy_app)], check=True)
    before = heavy.stat()
    write_heavy(heavy_app, "h2")
    os.utime(heavy, ns=(before.st_atime_ns, before.st_mtime_ns))  # the .pyc now looks valid
    server = serve(app_dir=heavy_app, args=("--preload", "heavy"))
    assert answer(server)[1] == "h2"


def test_without_preload_each_worker_imports_it(serve, heavy_app):
    server = serve(app_dir=heavy_app)
    _, _, imported_by, worker = answer(server)
    assert imported_by == worker
    assert not server.find("preload.done")


def test_a_preload_that_fails_to_import_refuses_the_start(tmp_path, heavy_app):
    (heavy_app / "broken.py").write_text("import heavy\nraise RuntimeError('no GPU here')\n")
    line = serve_fails(tmp_path, heavy_app, "heavy,broken")
    assert "cannot preload 'broken'" in line and "RuntimeError: no GPU here (broken.py:2)" in line
    line = serve_fails(tmp_path, heavy_app, "no_such_module")
    assert line.endswith("cannot preload 'no_such_module': ModuleNotFoundError: No module named 'no_such_module'")


def test_a_preload_that_starts_a_thread_is_refused(tmp_path, heavy_app):
    (heavy_app / "threaded.py").write_text(
        "import threading\nimport time\n\n"
        "threading.Thread(target=time.sleep, args=(60,), name='poller', daemon=True).start()\n"
    )
    line = serve_fails(tmp_path, heavy_app, "threaded")
    assert "started Python thread(s) poller" in line and "a forked worker would have none of them" in line


def test_the_master_never_imports_the_app(tmp_path, heavy_app):
    line = serve_fails(tmp_path, heavy_app, "heavy,app")
    assert "cannot preload the app 'app' itself" in line
    (heavy_app / "helper.py").write_text("import app\n")
    line = serve_fails(tmp_path, heavy_app, "helper")
    assert "preloading helper imported the app 'app' itself" in line


def test_a_preload_that_leaves_a_file_open_is_a_warning(serve, heavy_app):
    data = heavy_app / "table.txt"
    data.write_text("1 2 3\n")
    (heavy_app / "opener.py").write_text(f"TABLE = open({str(data)!r})\n")
    server = serve(app_dir=heavy_app, args=("--preload", "opener"))
    warning = server.wait_event("preload.warning")
    assert "fd(s) left open at import" in warning["warning"] and str(data) in warning["warning"]
    assert answer(server)[0] == "v1", "a warning: the server serves"


@pytest.mark.parametrize(
    "given, expected", [("numpy", ("numpy",)), ("a.b, c", ("a.b", "c")), ("", ()), (["x", "y.z"], ("x", "y.z"))]
)
def test_config_preload_takes_module_names(given, expected):
    assert Config(target="app", preload=given).preload == expected


@pytest.mark.parametrize(
    "given, error",
    [
        ("numpy:array", "bad preload module 'numpy:array'"),
        (["1x"], "bad preload module '1x'"),
        ("hello,app", "cannot preload the app 'app' itself"),
    ],
)
def test_config_refuses_bad_preloads(given, error):
    with pytest.raises(LabError, match=error):
        Config(target="app:App", preload=given)
    config = Config(target="app")
    with pytest.raises(LabError):
        config.set(preload=given)
    assert config.preload == (), "a refused option changes nothing"


def serve_with_site(tmp_path: Path, app_dir: Path, site: Path, *args: str) -> ServerProcess:
    """``serve`` with ``site`` (modules from outside the app's folder) on the server's PYTHONPATH."""
    server = ServerProcess(tmp_path, app_dir=app_dir, args=args)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return server.start(env={**os.environ, "PYTHONPATH": path})


def test_preload_auto_finds_what_the_app_imports_from_outside_its_folder(tmp_path, heavy_app):
    site = tmp_path / "site"
    site.mkdir()
    (heavy_app / "heavy.py").rename(site / "heavy.py")
    (heavy_app / "helper.py").write_text("NAME = 'helper'\n")  # the app's own: reloaded, never preloaded
    write_app(heavy_app, "v1", source="import helper\n" + APP)
    server = serve_with_site(tmp_path, heavy_app, site, "--preload", "auto", "--watch", str(heavy_app))
    try:
        done = server.wait_event("preload.done")
        assert "heavy" in done["modules"] and "helper" not in done["modules"] and "app" not in done["modules"]
        text, version, imported_by, worker = answer(server)
        assert (text, version) == ("v1", "h1") and imported_by == server.pid != worker
        write_app(heavy_app, "v2", source="import helper\n" + APP)
        server.wait_event("reload.done", generation=2)
        text, _, imported_by, worker = answer(server)
        assert text == "v2" and imported_by == server.pid and worker in server.worker_pids(2)
    finally:
        server.stop()


def test_preload_auto_with_an_app_that_does_not_import_is_a_warning(tmp_path, heavy_app):
    site = tmp_path / "site"
    site.mkdir()
    (heavy_app / "heavy.py").rename(site / "heavy.py")
    write_app(heavy_app, "v1", source=APP + "\nraise RuntimeError('broken on purpose')\n")
    server = ServerProcess(tmp_path, app_dir=heavy_app, args=("--preload", "auto"))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    server.start(wait=False, env={**os.environ, "PYTHONPATH": path})
    try:
        warning = server.wait_event("preload.warning")
        assert "RuntimeError: broken on purpose" in warning["warning"]
        assert server.wait_event("preload.done")["modules"] == ["heavy"], "what it imported before the error"
        server.wait_event("reload.failed")
    finally:
        server.stop()


def slow_preload(app_dir: Path, marker: Path) -> None:
    """``slow``: a preload that says it began (``marker``), then takes 3 s."""
    (app_dir / "slow.py").write_text(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(3)\n")


def test_a_reload_asked_while_the_master_preloads_does_not_kill_it(serve, tmp_path, heavy_app):
    marker = tmp_path / "preloading"
    slow_preload(heavy_app, marker)
    server = serve(app_dir=heavy_app, args=("--preload", "slow"), wait=False)
    wait_until(marker.exists, 20, message="the master preloading, its pid file out")
    for signum in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2):
        os.kill(server.pid, signum)
    server.wait_ready(timeout=30)
    assert answer(server)[0] == "v1"


def test_a_stop_while_the_master_preloads_ends_it_cleanly(serve, tmp_path, heavy_app):
    marker = tmp_path / "preloading"
    slow_preload(heavy_app, marker)
    server = serve(app_dir=heavy_app, args=("--preload", "slow"), wait=False)
    wait_until(marker.exists, 20, message="the master preloading, its pid file out")
    assert server.pidfile.exists()
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert not server.pidfile.exists(), "no stale pid file"


def write_site(tmp_path: Path, **modules: str) -> Path:
    """A folder outside the app's, with ``modules`` (name: source) in it."""
    site = tmp_path / "site"
    site.mkdir()
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    return site


def discover_with(monkeypatch, site: Path, app_dir: Path, *watch: Path) -> tuple[tuple[str, ...], str | None]:
    """``discover`` for the app in ``app_dir``, with ``site`` on the throwaway child's path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p))
    return discover(Config(target="app", app_dir=str(app_dir), watch=[str(p) for p in watch], preload=(AUTO,)))


# Left running by the app's import: each alone kept the throwaway child (or the pipe of its output)
# open until the 60 s timeout, and the start was refused though the import took a millisecond.
LEFT_RUNNING = {
    "thread": "import threading\nthreading.Thread(target=threading.Event().wait, name='forever').start()\n",
    "process": (
        "import subprocess\nprint('chatty app')\n"
        "SLEEPER = subprocess.Popen(['sleep', '97'])\nopen({pidfile!r}, 'w').write(str(SLEEPER.pid))\n"
    ),
}


def assert_ended(pidfile: Path) -> None:
    """The process whose pid the app wrote in ``pidfile`` (if it got that far) ends; if it does
    not (the test failed), it is killed here."""
    if not pidfile.exists():
        return
    text = pidfile.read_text()
    if not text:  # killed before it wrote it: so was the process, in the child's group
        return
    pid = int(text)
    try:
        wait_until(lambda: not is_alive(pid), message="the process the app started ended")
    finally:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("left", sorted(LEFT_RUNNING))
def test_preload_auto_is_not_held_by_what_the_app_leaves_running(monkeypatch, tmp_path, heavy_app, left):
    site = write_site(tmp_path, heavy=HEAVY.format(version="h1"))
    (heavy_app / "heavy.py").unlink()
    pidfile = tmp_path / "sleeper.pid"
    write_app(heavy_app, "v1", source=LEFT_RUNNING[left].format(pidfile=str(pidfile)) + APP)
    try:
        modules, warning = discover_with(monkeypatch, site, heavy_app)
        assert "heavy" in modules and warning is None
    finally:
        assert_ended(pidfile)


def test_preload_auto_ends_a_child_that_hangs_and_what_it_started(monkeypatch, tmp_path, heavy_app):
    pidfile = tmp_path / "sleeper.pid"
    hang = LEFT_RUNNING["process"].format(pidfile=str(pidfile)) + "import threading\nthreading.Event().wait()\n"
    write_app(heavy_app, "v1", source=hang + APP)
    monkeypatch.setattr(preload_module, "DISCOVERY_TIMEOUT", 5.0)
    try:
        with pytest.raises(LabError, match="took over 5 s"):
            discover_with(monkeypatch, tmp_path, heavy_app)
    finally:
        assert_ended(pidfile)  # if the child got that far within the 5 s (it does, unless the machine crawls)


def test_preload_auto_leaves_out_the_modules_that_start_a_thread_at_import(tmp_path, heavy_app):
    poller = "import threading\nthreading.Thread(target=threading.Event().wait, name='poller', daemon=True).start()\n"
    site = write_site(tmp_path, heavy=HEAVY.format(version="h1"), poller=poller, client="import poller\n")
    (heavy_app / "heavy.py").unlink()
    write_app(heavy_app, "v1", source="import client\n" + APP)
    server = serve_with_site(tmp_path, heavy_app, site, "--preload", "auto")
    try:
        modules = server.wait_event("preload.done")["modules"]
        assert "heavy" in modules and "poller" not in modules and "client" not in modules
        text, version, imported_by, worker = answer(server)
        assert (text, version) == ("v1", "h1") and imported_by == server.pid != worker
    finally:
        server.stop()


def test_preload_auto_with_an_app_file_that_is_a_symlink(monkeypatch, tmp_path, heavy_app):
    site = write_site(tmp_path, heavy=HEAVY.format(version="h1"))
    (heavy_app / "heavy.py").unlink()
    linked = tmp_path / "lnk"
    linked.mkdir()
    (linked / "app.py").symlink_to(os.path.join("..", heavy_app.name, "app.py"))
    modules, warning = discover_with(monkeypatch, site, linked)
    assert "heavy" in modules and "app" not in modules and warning is None


def test_preload_auto_leaves_out_a_watched_file(monkeypatch, tmp_path, heavy_app):
    site = write_site(tmp_path, heavy=HEAVY.format(version="h1"), helper="NAME = 'helper'\n")
    (heavy_app / "heavy.py").unlink()
    write_app(heavy_app, "v1", source="import helper\n" + APP)
    modules, _ = discover_with(monkeypatch, site, heavy_app, site / "helper.py")
    assert "heavy" in modules and "helper" not in modules


@pytest.mark.parametrize(
    "crash, said",
    [
        ("import os\nos._exit(3)\n", "exit status 3"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", "killed by SIGTERM"),
    ],
)
def test_preload_auto_with_an_app_that_ends_its_process_at_import(monkeypatch, tmp_path, heavy_app, crash, said):
    write_app(heavy_app, "v1", source=crash + APP)
    modules, warning = discover_with(monkeypatch, tmp_path, heavy_app)
    assert modules == () and warning is not None and "ended without a list" in warning and said in warning


def test_preload_auto_with_an_app_that_ends_its_process_at_import_is_a_warning(tmp_path, heavy_app):
    write_app(heavy_app, "v1", source="import os\nos._exit(3)\n" + APP)
    server = ServerProcess(tmp_path, app_dir=heavy_app, args=("--preload", "auto")).start(wait=False)
    try:
        warning = server.wait_event("preload.warning")
        assert "ended without a list (exit status 3)" in warning["warning"]
        server.wait_event("reload.failed")
    finally:
        server.stop()
