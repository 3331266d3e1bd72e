"""`forklift status|reload|stop` talking to a master: here a fake one, a unix socket server in
the test that answers the way the master's control socket does (one JSON document, then
close), so every answer and every failure can be chosen."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from forklift import control
from forklift.control import ControlError
from support import pid_alive, wait_until


class FakeMaster:
    """Listens on PIDFILE.sock; `answer(command)` gives the JSON to send back for each
    connection (`command` is the parsed line, or None when the client sent nothing)."""

    def __init__(self, pidfile: str, answer):
        self.pidfile = pidfile
        self.answer = answer
        self.received: list = []  # raw bytes sent by each client
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(pidfile + ".sock")
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")  # a live pid: ours

    def __enter__(self) -> FakeMaster:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        for _ in range(10_000):  # bounded; each turn waits at most the accept timeout
            if self._stop.is_set():
                return
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                for _ in range(1000):
                    chunk = conn.recv(4096)
                    if not chunk:  # the client half-closed: "nothing more"
                        break
                    data += chunk
                self.received.append(data)
                command = json.loads(data.split(b"\n")[0]) if data.strip() else None
                reply = self.answer(command)
                conn.sendall(reply if isinstance(reply, bytes) else json.dumps(reply).encode())


@pytest.fixture
def pidfile():
    # unix socket paths must fit in sun_path: a short directory, not pytest's tmp_path
    import tempfile

    directory = tempfile.mkdtemp(prefix="fkc-")
    yield os.path.join(directory, "fk.pid")
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


def status_document(**changes) -> dict:
    document = {
        "pid": 4242,
        "uptime": 12.0,
        "generation": 1,
        "reload": {"generation": 1, "state": "done", "error": None},
        "target_workers": 2,
        "threads": 4,
        "workers": [
            {"pid": 11, "generation": 1, "age": 3.0, "requests": 7, "ready": True,
             "retiring": False, "state": "idle", "rss_mb": 20.5},
            {"pid": 12, "generation": 1, "age": 1.0, "requests": 0, "ready": False,
             "retiring": False, "state": "idle", "rss_mb": 18.0},
        ],
    }  # fmt: skip
    document.update(changes)
    return document


# --- status -----------------------------------------------------------------------------------


def test_status_reads_the_document_without_sending_a_command(pidfile):
    with FakeMaster(pidfile, lambda command: status_document()) as fake:
        status = control.fetch_status(pidfile)
    assert status == status_document()
    assert fake.received == [b""], "a status read sends nothing, it only half-closes"


def test_status_from_a_stats_address_over_tcp():
    document = status_document()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]

    def answer_once():
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(1)  # until the client half-closes
            conn.sendall(json.dumps(document).encode())

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        assert control.fetch_status(stats=f"127.0.0.1:{port}") == document
    finally:
        thread.join(5)
        server.close()


def test_status_of_a_master_that_is_not_there_is_one_line(pidfile):
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    with pytest.raises(ControlError) as err:
        control.fetch_status(pidfile)
    assert "cannot reach the master" in str(err.value)
    assert pidfile + ".sock" in str(err.value)
    assert "\n" not in str(err.value)


def test_an_answer_that_is_not_json_is_refused(pidfile):
    with (
        FakeMaster(pidfile, lambda command: b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        pytest.raises(ControlError, match="not a forklift answer"),
    ):
        control.fetch_status(pidfile)


def test_without_pidfile_or_stats_the_error_says_what_to_give():
    with pytest.raises(ControlError, match="give --pidfile or --stats"):
        control.fetch_status()


def test_format_status_shows_the_master_and_each_worker():
    text = control.format_status(
        status_document(reload={"generation": 3, "state": "failed", "error": "SyntaxError"})
    )
    lines = text.splitlines()
    assert lines[0].startswith("master 4242")
    assert "generation 1" in lines[0] and "workers 2/2 x 4 thread(s)" in lines[0]
    assert "last reload: failed SyntaxError" in text
    worker_11 = next(line for line in lines if line.split()[0] == "11")
    worker_12 = next(line for line in lines if line.split()[0] == "12")
    assert "idle" in worker_11 and "20.5" in worker_11 and " 7 " in worker_11
    assert "booting" in worker_12  # not ready yet


# --- pidfile ----------------------------------------------------------------------------------


def test_a_missing_pidfile_asks_whether_forklift_runs(tmp_path):
    with pytest.raises(ControlError, match="no such pidfile \\(is forklift running\\?\\)"):
        control.read_pid(str(tmp_path / "nope.pid"))


def test_a_pidfile_without_a_number_is_named(tmp_path):
    path = tmp_path / "fk.pid"
    path.write_text("not a pid\n")
    with pytest.raises(ControlError, match="cannot read a pid") as err:
        control.read_pid(str(path))
    assert str(path) in str(err.value)


def test_a_pidfile_of_an_exited_process_is_called_stale(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    path = tmp_path / "fk.pid"
    path.write_text(f"{gone.pid}\n")
    with pytest.raises(ControlError, match=f"process {gone.pid} is not running \\(stale"):
        control.read_pid(str(path))


# --- reload -----------------------------------------------------------------------------------


def reloading_master(states: list, accepted: bool = True, error: str | None = None):
    """Answers a reload command, then one status per poll with the next reload state."""
    polls = iter(states)

    def answer(command):
        if command is not None:
            assert command["cmd"] == "reload"
            if not accepted:
                return {"accepted": False, "error": error, "reload": {"generation": 1}}
            return {"accepted": True, "reload": {"generation": 2, "state": "pending"}}
        state, message = next(polls, ("pending", None))
        return status_document(generation=2, reload={"generation": 2, "state": state,
                                                     "error": message})  # fmt: skip

    return answer


def test_reload_returns_once_the_new_generation_serves(pidfile):
    answer = reloading_master([("pending", None), ("pending", None), ("done", None)])
    with FakeMaster(pidfile, answer) as fake:
        status = control.reload(pidfile, timeout=10, health_path="/healthz", health_host="h")
    assert status["reload"] == {"generation": 2, "state": "done", "error": None}
    command = json.loads(fake.received[0])
    assert command == {"cmd": "reload", "health_path": "/healthz", "health_host": "h"}
    assert len(fake.received) == 4  # the command, then polls until "done"


def test_a_failed_reload_says_the_old_workers_keep_serving(pidfile):
    answer = reloading_master([("failed", "worker boot: ImportError: no module named x")])
    with FakeMaster(pidfile, answer), pytest.raises(ControlError) as err:
        control.reload(pidfile, timeout=10)
    assert str(err.value) == (
        "reload failed, the old workers keep serving: worker boot: ImportError: no module named x"
    )


def test_a_refused_reload_gives_the_masters_reason(pidfile):
    answer = reloading_master([], accepted=False, error="a reload is already in progress")
    with (
        FakeMaster(pidfile, answer),
        pytest.raises(ControlError, match="reload refused: a reload is already in progress"),
    ):
        control.reload(pidfile, timeout=10)


def test_a_reload_that_never_finishes_times_out(pidfile):
    with (
        FakeMaster(pidfile, reloading_master([])),
        pytest.raises(ControlError, match="reload did not finish within 0 s"),
    ):  # pending forever
        control.reload(pidfile, timeout=0.3)


# --- stop -------------------------------------------------------------------------------------


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout.readline() == b"ready\n"  # its signal handlers are in place
    return proc


@pytest.mark.parametrize("graceful,expected", [(True, signal.SIGTERM), (False, signal.SIGINT)])
def test_stop_signals_the_master_and_returns_once_it_exited(tmp_path, graceful, expected):
    """The child is ours and we do not reap it while `stop` waits: it is a zombie then, and
    `stop` must see that it has exited (a supervisor that reaps only after `stop` returns)."""
    proc = _child(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    pidfile = tmp_path / "fk.pid"
    pidfile.write_text(f"{proc.pid}\n")
    try:
        control.stop(str(pidfile), graceful=graceful, timeout=10)
        assert not pid_alive(proc.pid)
        assert proc.wait(5) == -expected
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_stop_of_a_master_that_ignores_term_gives_up_after_the_timeout(tmp_path):
    proc = _child(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    pidfile = tmp_path / "fk.pid"
    pidfile.write_text(f"{proc.pid}\n")
    try:
        with pytest.raises(ControlError, match=f"master {proc.pid} still running after 0 s"):
            control.stop(str(pidfile), timeout=0.3)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(5)
    wait_until(lambda: not pid_alive(proc.pid), 5, what="the child to be gone")
