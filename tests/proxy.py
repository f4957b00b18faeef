"""A TCP proxy the fault-injection tests control: it sits between robots and the learner and
can delay every byte, or cut every connection and refuse new ones for a while."""

from __future__ import annotations

import asyncio
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.delay_s = 0.0
        self.refuse_until = 0.0
        self._connections: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, sock=self._sock))
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader, writer) -> None:
        if time.time() < self.refuse_until:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._connections |= {writer, upstream_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()
                self._connections.discard(dst)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self, seconds: float) -> None:
        """Drops every open connection and refuses new ones for `seconds`."""
        self.refuse_until = time.time() + seconds

        def drop():
            for writer in list(self._connections):
                transport = writer.transport
                if transport is not None:
                    transport.abort()
            self._connections.clear()

        self._loop.call_soon_threadsafe(drop)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self.cut(0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
