"""Naive floor for the benchmark: a bare asyncio + h11 HTTP/1.1 pass-through relay.

Per client connection: one h11 server connection and one keep-alive upstream h11
client connection. Each request is forwarded as is; the response is streamed back
event by event (write + drain per h11 event). No features, no tuning: this is what
a feature-less proxy reaches, used by bench.py as the reference ("floor").

    python3 tests/perf/floor_relay.py --port P --upstream 127.0.0.1:FAKEPORT
"""
from __future__ import annotations

import argparse
import asyncio

import h11


async def next_event(conn, reader):
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(65536))


async def relay(reader, writer, upstream, running):
    server, client = h11.Connection(h11.SERVER), h11.Connection(h11.CLIENT)
    up_writer = None
    task = asyncio.current_task()
    running.add(task)  # Python < 3.12 keeps no strong reference to this task: the GC would kill it
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        while True:
            req = await next_event(server, reader)
            if not isinstance(req, h11.Request):
                return
            up_writer.write(client.send(h11.Request(method=req.method, target=req.target, headers=req.headers)))
            event = await next_event(server, reader)
            while isinstance(event, h11.Data):
                up_writer.write(client.send(h11.Data(data=event.data)))
                event = await next_event(server, reader)
            if not isinstance(event, h11.EndOfMessage):
                return
            up_writer.write(client.send(h11.EndOfMessage()))
            await up_writer.drain()
            resp = await next_event(client, up_reader)
            while isinstance(resp, h11.InformationalResponse):
                resp = await next_event(client, up_reader)
            if not isinstance(resp, h11.Response):
                return
            writer.write(server.send(h11.Response(status_code=resp.status_code, headers=resp.headers, reason=resp.reason)))
            await writer.drain()
            event = await next_event(client, up_reader)
            while isinstance(event, h11.Data):
                writer.write(server.send(h11.Data(data=event.data)))
                await writer.drain()
                event = await next_event(client, up_reader)
            if not isinstance(event, h11.EndOfMessage):
                return
            writer.write(server.send(h11.EndOfMessage()))
            await writer.drain()
            server.start_next_cycle()  # raises LocalProtocolError if either side must close
            client.start_next_cycle()
    except (h11.ProtocolError, OSError):
        pass
    finally:
        running.discard(task)
        for w in (writer, up_writer):
            if w is not None:
                w.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    upstream = (host or "127.0.0.1", int(port))
    running = set()
    server = await asyncio.start_server(lambda r, w: relay(r, w, upstream, running), args.host, args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
