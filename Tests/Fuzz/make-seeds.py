#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus, Tests/Fuzz/corpus/<target>/seed-*, from the recorded upstream
transcripts in ../shared/wire (hex dumps of every chunk each side sent) plus a few hand-made
inputs. Each seed starts with the decision bytes its target reads first (see the target's file in
Sources/rathole-fuzz). Run from anywhere; existing seed-* files are replaced, regression-* files
(inputs the fuzzers found) are kept.

    Tests/Fuzz/make-seeds.py [WIRE_DIR]
"""
import glob, os, ssl, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
WIRE = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "wire")
CORPUS = os.path.join(HERE, "corpus")


def transcript(name):
    """{(conn, dir): bytes} for one scenario."""
    streams = {}
    for line in open(os.path.join(WIRE, name + ".hex.txt")):
        f = line.split()
        if len(f) == 5 and f[3].startswith("len="):
            key = (f[1], f[2])
            streams[key] = streams.get(key, b"") + bytes.fromhex(f[4])
    return streams


seeds = {}


def seed(target, name, data):
    seeds.setdefault(target, []).append((name, data))


# wire: role byte (0 server, 1 client control, 2 client data), split seed, stream.
for scenario in ["01-tcp-session", "02-wrong-token", "03-unknown-service", "04-udp-session", "05-heartbeat"]:
    t = transcript(scenario)
    short = scenario[:2]
    seed("wire", f"{short}-server-control", bytes([0, 3]) + t[("c1", "C>S")])
    seed("wire", f"{short}-client-control", bytes([1, 5]) + t[("c1", "S>C")])
    for (conn, d), data in sorted(t.items()):
        if conn == "c2" and d == "C>S":
            seed("wire", f"{short}-server-data", bytes([0, 1]) + data)
        if d == "S>C" and conn != "c1" and len(data) >= 4:
            seed("wire", f"{short}-client-data-{conn}", bytes([2, 7]) + data)
            if scenario.startswith("04"):
                # udp: mode 0, one whole frame; frames follow the 4-byte StartForwardUdp.
                rest = data[4:]
                while len(rest) >= 13:
                    size = 1 + rest[0] + struct.unpack_from("<H", rest, rest[0] - 1)[0]
                    seed("udp", f"04-frame-{len(seeds.get('udp', []))}", bytes([0]) + rest[:size])
                    rest = rest[size:]
seed("udp", "v6-frame", bytes([0, 24, 1, 0, 0, 0]) + bytes(15) + bytes([1, 0x35, 0x00, 3, 0]) + b"abc")
seed("udp", "build-v4", bytes([1, 0, 1]) + bytes([127, 0, 0, 1, 0x39, 0x30, 200, 0]) + b"payload")
seed("udp", "build-v6-long", bytes([1, 1, 0]) + bytes(range(16)) + bytes([0x50, 0, 0xE3, 0xFF]) + b"x")

# proxy: kind 0 method choice, 1 SOCKS5 reply stream, 2 built reply, 3 HTTP response stream.
seed("proxy", "method-none", bytes([0, 0, 5, 0]))
seed("proxy", "method-password", bytes([0, 1, 5, 2]))
seed("proxy", "socks5-v4", bytes([1, 5, 0, 0, 1, 127, 0, 0, 1, 0x1F, 0x90]) + b"target bytes")
seed("proxy", "socks5-name", bytes([1, 5, 0, 0, 3, 11]) + b"example.org" + bytes([1, 187]) + b"\x00\x01")
seed("proxy", "socks5-refused", bytes([1, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0]))
seed("proxy", "socks5-built", bytes([2, 2, 0, 9]) + b"localhost" + bytes([0, 80]) + b"after")
seed("proxy", "http-200", bytes([3, 1]) + b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\nafter")
seed("proxy", "http-407", bytes([3, 1]) + b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
seed("proxy", "http-long", bytes([3, 0]) + b"HTTP/1.0 200 OK\r\nX-Pad: " + b"p" * 40)

# websocket-frames: mode (bit 0: the peer masks; bit 1: build frames), split seed, bytes.
t = transcript("07-websocket")
for (conn, d), data in sorted(t.items()):
    end = data.find(b"\r\n\r\n")
    frames = data[end + 4:] if end >= 0 else data
    if d == "C>S" and end >= 0:
        seed("websocket-upgrade", f"07-{conn}-request", bytes([0]) + data[:end + 4])
    if frames:
        seed("websocket-frames", f"07-{conn}-{'client' if d == 'C>S' else 'server'}",
             bytes([1 if d == "C>S" else 0, 9]) + frames[:3000])
seed("websocket-frames", "built-fragmented-pings", bytes([3, 4, 0x40 | 0x80, 0x10, 0x00, 4, 5]) + b"ping!" + bytes([2, 0x41, 7]))
seed("websocket-frames", "built-close", bytes([2, 2, 0x40, 30, 7, 2, 3, 0xE8]))

# websocket-upgrade: mode 0 request, 1 response (to the key dGhlIHNhbXBsZSBub25jZQ==), 2 round trip.
seed("websocket-upgrade", "response-101", bytes([1]) + b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
seed("websocket-upgrade", "response-400", bytes([1]) + b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
seed("websocket-upgrade", "round-trip", bytes([2, 23]) + b"dGhlIHNhbXBsZSBub25jZQ==" + bytes([9]) + b"localhost" + bytes([0x1d, 0x09]))

# noise-handshake: pattern index (NK is 1), role (0 responder, 1 initiator), split seed, stream.
t = transcript("06-noise-nk")
seed("noise-handshake", "06-nk-responder", bytes([1, 0, 3]) + t[("c1", "C>S")])
seed("noise-handshake", "06-nk-initiator", bytes([1, 1, 3]) + t[("c1", "S>C")])
seed("noise-handshake", "06-nk-responder-data", bytes([1, 0, 6]) + t[("c2", "C>S")][:600])
seed("noise-handshake", "xx-responder-garbage", bytes([8, 0, 0]) + bytes([32, 0]) + bytes(range(32)) + bytes([64, 0]) + bytes(64))

# noise-transport: pattern, split seed, out size, edit switch (0: none, 64: handshake, 128: data),
# edit position (u32), xor, direction, message lengths.
seed("noise-transport", "nk-plain", bytes([1, 4, 0, 0, 0, 0, 0, 0, 1, 0, 5, 0x80, 0xFF, 0xFF, 3]))
seed("noise-transport", "xx-edit-data", bytes([8, 9, 2, 200, 30, 0, 0, 0, 0x40, 1, 100, 0xC0, 0x00, 0x10]))
seed("noise-transport", "kk-edit-handshake", bytes([4, 1, 1, 70, 40, 0, 0, 0, 1, 0, 17]))

# tls: mode (bit 0: a real client; bit 1: receive in place), split seed, then a ClientHello or the
# real client's edit (position u32, xor) and message lengths.
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
try:
    client.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
seed("tls", "clienthello", bytes([0, 0]) + hello)
seed("tls", "clienthello-split", bytes([2, 5]) + hello)
seed("tls", "real-client", bytes([1, 4, 0, 0, 0, 0, 0, 10, 0x80, 0x00, 0x10]))
seed("tls", "real-client-edit", bytes([3, 7, 100, 0, 0, 0, 0x55, 20]))

# config: the recorded configs and the examples.
for path in sorted(glob.glob(os.path.join(WIRE, "*.toml")) + glob.glob(os.path.join(HERE, "..", "..", "examples", "*.toml"))):
    seed("config", os.path.basename(path).replace(".toml", ""), open(path, "rb").read())

# addresses.
for i, text in enumerate(["127.0.0.1", "::1", "[::1]:2333", "0.0.0.0:2333", "example.com:443", "::ffff:1.2.3.4",
                          "1:2:3:4:5:6:7:8", "[fe80::1]:80", "2001:db8::ff00:42:8329", "localhost:1"]):
    seed("addresses", f"text-{i}", text.encode())

for target, items in seeds.items():
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for old in glob.glob(os.path.join(d, "seed-*")):
        os.remove(old)
    for name, data in items:
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(items)} seeds")
