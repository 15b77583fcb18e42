#!/usr/bin/env python3
"""A websocket <-> TCP bridge for the interop tests, built on the `websockets` package (PyPI),
an independent implementation of RFC 6455.

  ws_bridge.py server --to PORT [--ping S] [--fragment]
      A websocket server on 127.0.0.1 (a free port); every websocket connection is bridged to a
      new TCP connection to 127.0.0.1:PORT. Put it between our client (websocket transport) and
      our server (tcp transport): it checks our client's upgrade and framing.
  ws_bridge.py client --to PORT [--ping S] [--fragment]
      A TCP listener on 127.0.0.1 (a free port); every TCP connection is bridged to a new
      websocket connection to ws://127.0.0.1:PORT/. Put it between our client (tcp) and our
      server (websocket): it checks our server's upgrade and framing.

Bytes travel as binary messages. --ping S: each connection pings every S seconds and requires
the pong within 5 s. --fragment: every chunk goes out as one message in three fragments.
Prints "ready <port>" once listening. On stderr, one line per connection when it ends:
"end <n>: code=<close code> pongs=<n> sent=<messages> received=<messages>", and
"ERROR <n>: ..." for anything that is not a clean end (a protocol error, a text message, a
missing pong).
"""
import argparse
import socket
import sys
import threading

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect
    from websockets.sync.server import serve as ws_serve
except ImportError as e:  # pragma: no cover
    print(f"ERROR: the websockets package is missing ({e}); scripts/install-deps installs it", file=sys.stderr)
    sys.exit(2)

CLEAN = {1000, 1001, 1005, 1006}   # 1006: the peer closed TCP without a close frame (rathole does)
lock = threading.Lock()
counter = [0]


def log(line):
    with lock:
        print(line, file=sys.stderr, flush=True)


def bridge(ws, tcp, args):
    with lock:
        counter[0] += 1
        n = counter[0]
    stats = {"pongs": 0, "sent": 0, "received": 0}
    done = threading.Event()

    def ws_to_tcp():
        try:
            while True:
                message = ws.recv()
                if isinstance(message, str):
                    log(f"ERROR {n}: a text message")
                    ws.close(1003)
                    break
                stats["received"] += 1
                tcp.sendall(message)
        except ConnectionClosed:
            pass
        except OSError as e:
            log(f"ERROR {n}: tcp send: {e}")
        finally:
            try:
                tcp.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def tcp_to_ws():
        try:
            while True:
                chunk = tcp.recv(65536)
                if not chunk:
                    break
                if args.fragment and len(chunk) >= 3:
                    third = len(chunk) // 3
                    ws.send([chunk[:third], chunk[third:2 * third], chunk[2 * third:]])
                else:
                    ws.send(chunk)
                stats["sent"] += 1
        except ConnectionClosed:
            pass
        except OSError:
            pass
        finally:
            ws.close()

    def pinger():
        while not done.wait(args.ping):
            try:
                waiter = ws.ping(b"bridge-%d" % stats["pongs"])
            except ConnectionClosed:
                return
            if not waiter.wait(5):
                if not done.is_set():
                    log(f"ERROR {n}: no pong within 5 s")
                    ws.close(1011)
                return
            stats["pongs"] += 1

    threads = [threading.Thread(target=ws_to_tcp), threading.Thread(target=tcp_to_ws)]
    if args.ping:
        threads.append(threading.Thread(target=pinger, daemon=True))
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    done.set()
    tcp.close()
    code = ws.close_code
    if code is not None and code not in CLEAN:
        log(f"ERROR {n}: closed with code {code} {ws.close_reason!r}")
    log(f"end {n}: code={code} pongs={stats['pongs']} sent={stats['sent']} received={stats['received']}")


def run_server(args):
    def handler(ws):
        try:
            tcp = socket.create_connection(("127.0.0.1", args.to))
        except OSError as e:
            log(f"ERROR: cannot reach 127.0.0.1:{args.to}: {e}")
            return
        bridge(ws, tcp, args)

    with ws_serve(handler, "127.0.0.1", 0, max_size=None, compression=None, ping_interval=None) as server:
        print(f"ready {server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()


def run_client(args):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(f"ready {listener.getsockname()[1]}", flush=True)

    def handle(tcp):
        try:
            ws = ws_connect(f"ws://127.0.0.1:{args.to}/", max_size=None, ping_interval=None, open_timeout=10)
        except Exception as e:  # refused upgrade, bad response: the test reads this line
            log(f"ERROR: websocket upgrade to 127.0.0.1:{args.to} failed: {e!r}")
            tcp.close()
            return
        with ws:
            bridge(ws, tcp, args)

    while True:
        tcp, _ = listener.accept()
        threading.Thread(target=handle, args=(tcp,), daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["server", "client"])
    parser.add_argument("--to", type=int, required=True)
    parser.add_argument("--ping", type=float, default=0)
    parser.add_argument("--fragment", action="store_true")
    args = parser.parse_args()
    (run_server if args.mode == "server" else run_client)(args)


if __name__ == "__main__":
    main()
