"""aibench.sut.transport: frames round-trip on both sides, every bound is checked before allocating, a
broken stream is an error (never a hang or a huge allocation), and a child dies with its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from aibench.sut import transport as T


def pair() -> tuple[socket.socket, socket.socket]:
    return T.socket_pair(1 << 16)


def test_tensor_frame_round_trips_without_copies_of_its_own():
    a, b = pair()
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    T.send_frame(a, T.Frame(b"X", x, "float32", x.shape, key=3, id=2**40 + 5))
    f = T.recv_frame(b, 1 << 20, tags=(b"X",))
    assert (f.tag, f.dtype, f.shape, f.key, f.id) == (b"X", "float32", (2, 3, 4), 3, 2**40 + 5)
    assert isinstance(f.payload, bytearray)  # writable: frombuffer wraps it as it is
    np.testing.assert_array_equal(np.frombuffer(f.payload, np.float32).reshape(f.shape), x)


def test_raw_and_empty_frames():
    a, b = pair()
    T.send_frame(a, T.Frame(b"J", b'{"k": 1}'))
    T.send_frame(a, T.Frame(b"S"))
    assert bytes(T.recv_frame(b, 100).payload) == b'{"k": 1}'
    f = T.recv_frame(b, 100)
    assert f.tag == b"S" and f.nbytes == 0 and f.shape == ()


def test_large_payload_crosses_in_one_frame():
    a, b = pair()
    x = np.random.default_rng(0).standard_normal((16, 3, 227, 227), dtype=np.float32)  # IMC batch 16, ~10 MB
    t = threading.Thread(target=T.send_frame, args=(a, T.Frame(b"X", x, "float32", x.shape)))
    t.start()
    f = T.recv_frame(b, 16 << 20)
    t.join()
    assert f.nbytes == x.nbytes and np.array_equal(np.frombuffer(f.payload, np.float32).reshape(x.shape), x)


def _raw(tag=b"X", code=1, ndim=1, key=0, ident=0, nbytes=16, dims=(4,), magic=T.MAGIC) -> bytes:
    return T.HEADER.pack(magic, tag, code, ndim, key, ident, nbytes) + struct.pack(f"<{len(dims)}q", *dims)


@pytest.mark.parametrize("raw, message", [
    (_raw(magic=b"GE"), "bad magic"),
    (_raw(tag=b"?"), "unexpected frame tag"),
    (_raw(code=99), "unknown dtype"),
    (_raw(ndim=9, dims=(1,) * 9, nbytes=4), "dimensions"),
    (_raw(nbytes=1 << 40, dims=(1 << 38,)), "over the limit"),
    (_raw(nbytes=16, dims=(-4,)), "negative"),
    (_raw(nbytes=12, dims=(4,)), "payload of 12 bytes"),
    # prod(dims) overflows int64 (2^62 × 2^62): Python integers do not, and the size does not match
    (_raw(ndim=2, nbytes=16, dims=(1 << 62, 1 << 62)), "payload of 16 bytes"),
])
def test_a_bad_header_is_refused_before_anything_is_allocated(raw, message):
    a, b = pair()
    a.sendall(raw)
    with pytest.raises(T.FrameError, match=message):
        T.recv_frame(b, 1 << 20, tags=(b"X",))


def test_a_stream_cut_inside_a_frame_is_an_error_and_a_clean_end_is_eof():
    a, b = pair()
    a.sendall(_raw()[:10])
    a.close()
    with pytest.raises(T.FrameError, match="ended inside"):
        T.recv_frame(b, 100)
    c, d = pair()
    c.sendall(_raw() + b"\0" * 8)  # half the payload
    c.close()
    with pytest.raises(T.FrameError, match="payload"):
        T.recv_frame(d, 100)
    e, f = pair()
    e.close()
    with pytest.raises(EOFError):
        T.recv_frame(f, 100)


def test_sender_refuses_a_payload_that_does_not_match_its_shape():
    a, _b = pair()
    with pytest.raises(T.FrameError):
        T.send_frame(a, T.Frame(b"X", b"\0" * 12, "float32", (4,)))
    with pytest.raises(T.FrameError):
        T.send_frame(a, T.Frame(b"X", b"", "complex", (0,)))


def test_frame_protocol_parses_many_small_frames_and_large_ones_in_place():
    """The asyncio side: a worker-like thread echoes; many small frames, then one larger than every buffer,
    then a clean close."""
    got: list[T.Frame] = []
    lost: list[BaseException | None] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = pair()
        done = loop.create_future()

        def on_frame(f: T.Frame) -> None:
            got.append(f)
            if len(got) == 101:
                done.set_result(None)

        def on_lost(exc: BaseException | None) -> None:
            lost.append(exc)

        transport, _proto = await loop.create_connection(lambda: T.FrameProtocol(on_frame, on_lost, 8 << 20), sock=a)
        big = np.arange(300_000, dtype=np.int64)  # 2.4 MB: larger than the socket buffers and the staging

        def echo() -> None:
            stream = b.makefile("rb")
            frames = [T.recv_frame(stream, 8 << 20) for _ in range(101)]
            T.send_frames(b, [T.Frame(b"O", f.payload, f.dtype, f.shape, f.key, f.id + 1) for f in frames])
            b.close()

        t = threading.Thread(target=echo)
        t.start()
        small = [T.Frame(b"X", np.full(3, i, np.float32), "float32", (3,), i, i) for i in range(100)]
        T.write_frames(transport, [*small, T.Frame(b"X", big, "int64", big.shape, 7, 41)])
        await asyncio.wait_for(done, 60)
        t.join()
        await asyncio.sleep(0.1)
        assert [f.id for f in got] == [*range(1, 101), 42]
        assert np.array_equal(np.frombuffer(got[-1].payload, np.int64), big) and got[-1].key == 7
        assert np.frombuffer(got[50].payload, np.float32).tolist() == [50.0] * 3
        transport.close()

    asyncio.run(main())
    assert lost == [None]


def test_frame_protocol_closes_on_a_bad_frame_and_reports_it():
    lost: list[BaseException | None] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = pair()
        ended = loop.create_future()
        await loop.create_connection(
            lambda: T.FrameProtocol(lambda f: None, lambda e: (lost.append(e), ended.set_result(None)), 1 << 20,
                                    tags=(b"X",)), sock=a)
        b.sendall(_raw(tag=b"?"))
        await asyncio.wait_for(ended, 10)
        b.close()

    asyncio.run(main())
    assert isinstance(lost[0], T.FrameError) and "tag" in str(lost[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path):
    """parent (python) starts child (python, die_with_parent) and is SIGKILLed: the child goes too."""
    pidfile = tmp_path / "child.pid"
    child = textwrap.dedent(f"""
        import os, sys, time
        from aibench.lifetime import die_with_parent
        assert die_with_parent(int(sys.argv[1]))
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}, str(os.getpid())])
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, "-c", parent], env=env)
    deadline = time.monotonic() + 60
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    cpid = int(pidfile.read_text())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 10
    while _alive(cpid):
        assert time.monotonic() < deadline, "the child outlived its SIGKILLed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_orphan_exits_at_once_when_its_parent_is_already_gone():
    code = subprocess.run([sys.executable, "-c", "from aibench.lifetime import die_with_parent; "
                           "die_with_parent(1); print('survived')"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "survived" not in code.stdout and code.returncode == 128 + signal.SIGKILL


def test_frames_received_into_reused_buffers():
    a, b = pair()
    pool = T.BufferPool(keep=2)
    stream = b.makefile("rb")
    first = np.arange(1000, dtype=np.float32)
    T.send_frames(a, [T.Frame(b"X", first, "float32", first.shape), T.Frame(b"X", first[:10], "float32", (10,))])
    f1 = T.recv_frame(stream, 1 << 20, alloc=pool.take)
    assert np.array_equal(np.frombuffer(f1.payload, np.float32), first)
    under = f1.payload.obj
    pool.give(f1.payload)
    f2 = T.recv_frame(stream, 1 << 20, alloc=pool.take)  # a smaller frame reuses the same buffer
    assert f2.payload.obj is under and f2.nbytes == 40
    assert np.array_equal(np.frombuffer(f2.payload, np.float32), first[:10])
