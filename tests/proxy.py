"""A TCP proxy in front of Redis that loses, cuts, stalls or truncates what passes through it, on command: the
faults a network and a dying Redis cause, for tests of what the stores and the service do then. `proxy` in
tests/conftest.py hands one to a test, started on its event loop."""

from __future__ import annotations

import asyncio
import contextlib

from tests.processes import free_port

HANDSHAKE = (b"HELLO", b"AUTH", b"CLIENT", b"SELECT")


def split_commands(buf: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The complete RESP commands at the start of `buf` as (NAME, raw bytes), and the incomplete rest."""
    commands, pos = [], 0
    while pos < len(buf):
        start, args = pos, []
        end = buf.find(b"\r\n", pos)
        if end < 0:
            break
        count, pos = int(buf[pos + 1 : end]), end + 2  # redis-py sends arrays only: `*N`
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size, pos = int(buf[pos + 1 : end]), end + 2
            if len(buf) < pos + size + 2:
                break
            args.append(buf[pos : pos + size])
            pos += size + 2
        if len(args) < count:
            return commands, buf[start:]
        commands.append((args[0].upper(), buf[start:pos]))
    return commands, buf[pos:]


class Proxy:
    """Forwards to the real Redis; for every command but the handshake, `mode` can instead:

    drop      close the connection instead of passing a script call on (the script never runs)
    lose      pass a script call on, then close before its reply (it ran; the caller cannot know)
    truncate  pass the call on and return half of the reply, then close
    stall     hold every reply (the script ran; the reply comes too late)
    slow      pass every reply on `delay` seconds late
    error     answer each command with the line `reply` (a Redis error, or any RESP reply)

    `then`, if set, is the mode after the first call dropped or lost: one fault, then service again.
    """

    def __init__(self, upstream_port: int = 6379, db: int = 5) -> None:
        self.mode = "forward"
        self.then: str | None = None
        self.reply = b""
        self.delay = 0.0
        self.port = free_port()
        self.upstream_port = upstream_port
        self.db = db
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop listening and cut every connection: the port refuses from now on."""
        assert self.server is not None
        self.server.close()
        while self.tasks:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()
        await asyncio.sleep(0.01)  # closed transports release their sockets on the next turns of the loop

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await self._pump(reader, writer, up_reader, up_writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # a cut connection is what this proxy is for; cancelled: the proxy stops
        finally:
            writer.close()
            if up_writer is not None:
                up_writer.close()
            self.tasks.discard(task)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        mute = asyncio.Event()  # set: replies from Redis are swallowed

        async def replies() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    while self.mode == "stall":
                        await asyncio.sleep(0.02)
                    if self.mode == "slow":
                        await asyncio.sleep(self.delay)
                    if self.mode == "truncate":
                        writer.write(data[: len(data) // 2])
                        writer.close()
                        return
                    if not mute.is_set() and not writer.is_closing():
                        writer.write(data)

        back = asyncio.create_task(replies())
        try:
            buf = b""
            while data := await reader.read(65536):
                commands, buf = split_commands(buf + data)
                for name, raw in commands:
                    if self.mode == "forward" or name in HANDSHAKE:
                        up_writer.write(raw)
                    elif self.mode == "error":
                        writer.write(self.reply)
                    elif self.mode == "drop":
                        self.mode = self.then or self.mode
                        return
                    elif self.mode == "lose":
                        self.mode = self.then or self.mode
                        mute.set()
                        up_writer.write(raw)
                        await asyncio.sleep(0.05)  # the script runs meanwhile
                        return
                    else:  # stall, slow, truncate: the call goes through, its reply is dealt with in replies()
                        up_writer.write(raw)
        finally:
            back.cancel()
            await asyncio.gather(back, return_exceptions=True)
