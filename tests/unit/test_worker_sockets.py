"""``serve --workers N``'s listening sockets (gateway/serving.py ``WorkerSockets``) and the
supervisor handing worker slot ``i`` socket ``i`` (gateway/worker_processes.py ``Supervisor``)."""

from __future__ import annotations

import errno
import inspect
import signal
import socket
from pathlib import Path

import pytest
import uvicorn
from uvicorn.supervisors import multiprocess

from gateway import worker_processes
from gateway.serving import SPREADS_CONNECTIONS, WorkerSockets, bind
from gateway.worker_processes import Supervisor

HOST = "127.0.0.1"


def accepted(sock: socket.socket) -> int:
    """How many connections wait in ``sock``'s accept queue (accepting and closing them)."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_each_slot_listens_on_its_own_socket_and_the_kernel_spreads_new_connections() -> None:
    assert SPREADS_CONNECTIONS  # Linux: what runs the tests and reelgate
    with WorkerSockets(HOST, 0, 2, backlog=128) as sockets:
        assert len({s.fileno() for s in sockets.listening}) == 2
        assert all(s.getsockname() == (HOST, sockets.port) for s in sockets.listening)
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets.listening)
        clients = [socket.create_connection((HOST, sockets.port)) for _ in range(64)]
        counts = [accepted(s) for s in sockets.listening]
        for c in clients:
            c.close()
    assert sum(counts) == 64 and min(counts) >= 12, counts  # hashed: binomial(64, 1/2) is >= 12 but 1 in 10^6


def test_without_spreading_every_slot_shares_the_one_socket() -> None:
    with WorkerSockets(HOST, 0, 3, backlog=128, per_slot=False) as sockets:
        assert sockets.listening == [sockets.claim] and sockets.of(2) is sockets.claim


@pytest.mark.parametrize("per_slot", [True, False])
def test_a_second_group_or_server_on_the_port_is_refused(per_slot: bool) -> None:
    with WorkerSockets(HOST, 0, 2, backlog=128, per_slot=per_slot) as sockets:
        sockets.listening[0].listen(128)  # a shared socket listens once its first worker starts
        for attempt in (lambda: WorkerSockets(HOST, sockets.port, 2, backlog=128), lambda: bind(HOST, sockets.port)):
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno == errno.EADDRINUSE


def test_a_dropped_slot_closes_its_socket() -> None:
    with WorkerSockets(HOST, 0, 2, backlog=128, per_slot=True) as sockets:
        one = sockets.of(1)
        sockets.drop(1)
        assert one.fileno() == -1 and sockets.of(1) is not one


class FakeProcess:
    """uvicorn's ``Process`` as the supervisor drives it, recording the sockets it got."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        self.sockets = sockets
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.dead = False

    def start(self) -> None:
        self.pid = 1_000_000 + id(self) % 1000

    def is_alive(self, timeout: float = 5) -> bool:
        return not self.dead

    def wait_until_ready(self, timeout: float, should_exit: object = None) -> bool:
        return True

    def kill(self) -> None:
        self.exitcode = -9

    def terminate(self) -> None:
        self.exitcode = 0

    def join(self) -> None:
        pass


def test_worker_slot_i_always_gets_socket_i(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_processes, "Process", FakeProcess)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the supervisor's handlers stay out of pytest
    config = uvicorn.Config(lambda: None, workers=2)
    with WorkerSockets(HOST, 0, 2, backlog=128, per_slot=True) as sockets:
        supervisor = Supervisor(config, sockets, tmp_path)

        def held() -> list[socket.socket]:
            return [s for p in supervisor.processes for s in p.sockets]  # type: ignore[attr-defined]

        supervisor.init_processes()
        assert held() == [sockets.of(0), sockets.of(1)]
        dead = supervisor.processes[0]
        dead.dead = True  # type: ignore[attr-defined]
        supervisor.keep_subprocess_alive()
        assert supervisor.processes[0] is not dead and held() == [sockets.of(0), sockets.of(1)]
        before = list(supervisor.processes)
        supervisor.restart_all()
        assert not set(supervisor.processes) & set(before) and held() == [sockets.of(0), sockets.of(1)]
        supervisor.handle_ttin()
        assert held() == [sockets.of(0), sockets.of(1), sockets.of(2)] and len(set(held())) == 3
        third = sockets.of(2)
        supervisor.handle_ttou()
        assert held() == [sockets.of(0), sockets.of(1)] and third.fileno() == -1


def test_every_uvicorn_method_that_starts_a_worker_is_overridden() -> None:
    """The supervisor re-implements each: should a uvicorn upgrade start workers elsewhere (or
    change how), they would all share one socket again, or fail."""
    starting = {name for name, f in vars(multiprocess.Multiprocess).items()
                if callable(f) and "Process(" in inspect.getsource(f)}
    assert starting == {"init_processes", "keep_subprocess_alive", "restart_all", "handle_ttin"}
    assert starting <= set(vars(Supervisor))
    assert list(inspect.signature(multiprocess.Process).parameters) == ["config", "sockets"]
