#!/usr/bin/python3
"""An independent Noise peer for the interop tests, built on python3-dissononce (Debian).

Talks on stdin/stdout with rathole's framing: every Noise message, handshake or transport, is preceded
by its length as a u16 little-endian. Handshake payloads are empty, no prologue.

usage: noise_peer.py PROTOCOL ROLE LOCAL_PRIVATE_HEX|- REMOTE_PUBLIC_HEX|-
       noise_peer.py --sessions
  PROTOCOL a protocol name: Noise_<pattern>_25519_<ChaChaPoly|AESGCM>_<BLAKE2s|BLAKE2b|SHA256|SHA512>
  ROLE     initiator | responder (this script's role)
With --sessions, sessions run one after another on the same stdin/stdout: each starts with a line
"PROTOCOL ROLE LOCAL_PRIVATE_HEX|- REMOTE_PUBLIC_HEX|-\n" in clear, then the session as below; end of
input before a line ends the script (exit 0).

After the handshake the two sides exchange application messages inside the encrypted stream, each
  u32 LE length L, body (L bytes), blake2s-256(body) (32 bytes)
This script first sends one message whose body is its handshake hash (HASHLEN bytes: 32 or 64)
followed by the remote static key it knows (32 bytes, or nothing). Then, for every message it
receives, it checks the digest and answers with body = received body reversed. L = 0xFFFFFFFF ends
the session (exit 0). Transport plaintext is split into Noise messages of at most 65519 bytes.
Exit codes: 2 usage or missing dissononce, 3 a check failed, 4 the peer closed early.
"""
import hashlib
import importlib
import os
import struct
import sys

try:
    from dissononce.cipher.aesgcm import AESGCMCipher
    from dissononce.cipher.chachapoly import ChaChaPolyCipher
    from dissononce.dh.x25519.x25519 import X25519DH
    from dissononce.dh.x25519.private import PrivateKey
    from dissononce.dh.x25519.public import PublicKey
    from dissononce.hash.blake2b import Blake2bHash
    from dissononce.hash.blake2s import Blake2sHash
    from dissononce.hash.sha256 import SHA256Hash
    from dissononce.hash.sha512 import SHA512Hash
    from dissononce.processing.impl.cipherstate import CipherState
    from dissononce.processing.impl.handshakestate import HandshakeState
    from dissononce.processing.impl.symmetricstate import SymmetricState
except ImportError as error:
    sys.stderr.write("noise_peer.py: python3-dissononce is not installed (%s)\n" % error)
    sys.exit(2)

MAX_PLAINTEXT = 65535 - 16


def fail(message, code=3):
    sys.stderr.write("noise_peer.py: %s\n" % message)
    sys.stderr.flush()
    sys.exit(code)


def digest(body):
    return hashlib.blake2s(body, digest_size=32).digest()


def read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(0, n)
        if not chunk:
            fail("peer closed the stream early", 4)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def write_all(data):
    view = memoryview(data)
    while view:
        written = os.write(1, view)
        view = view[written:]


def read_frame():
    (length,) = struct.unpack("<H", read_exact(2))
    return read_exact(length)


def frame(message):
    if len(message) > 65535:
        fail("message too large to frame: %d" % len(message))
    return struct.pack("<H", len(message)) + message


CIPHERS = {"ChaChaPoly": ChaChaPolyCipher, "AESGCM": AESGCMCipher}
HASHES = {"BLAKE2s": Blake2sHash, "BLAKE2b": Blake2bHash, "SHA256": SHA256Hash, "SHA512": SHA512Hash}


def parse_protocol(name):
    """(pattern, cipher, hash) of a protocol name."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise" or parts[2] != "25519" or parts[3] not in CIPHERS or parts[4] not in HASHES:
        fail("unsupported protocol %s" % name, 2)
    return parts[1], CIPHERS[parts[3]](), HASHES[parts[4]]()


def load_pattern(name):
    for family in ("interactive", "deferred"):
        try:
            module = importlib.import_module("dissononce.processing.handshakepatterns.%s.%s" % (family, name))
        except ImportError:
            continue
        return getattr(module, "%sHandshakePattern" % name)()
    fail("dissononce has no pattern %s" % name, 2)


class Stream:
    """The encrypted byte stream after the handshake."""

    def __init__(self, send, receive):
        self.send_cipher = send
        self.receive_cipher = receive
        self.buffer = b""

    def send(self, plaintext):
        out = []
        for offset in range(0, len(plaintext), MAX_PLAINTEXT):
            chunk = plaintext[offset:offset + MAX_PLAINTEXT]
            out.append(frame(self.send_cipher.encrypt_with_ad(b"", chunk)))
        write_all(b"".join(out))

    def receive(self, n):
        while len(self.buffer) < n:
            self.buffer += self.receive_cipher.decrypt_with_ad(b"", read_frame())
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_message(self, body):
        self.send(struct.pack("<I", len(body)) + body + digest(body))


def run_session(protocol_name, role, local_private, remote_public):
    if role not in ("initiator", "responder"):
        fail(__doc__, 2)
    pattern_name, cipher, hash_function = parse_protocol(protocol_name)
    pattern = load_pattern(pattern_name)
    initiator = role == "initiator"
    dh = X25519DH()
    s = dh.generate_keypair(PrivateKey(bytes.fromhex(local_private))) if local_private != "-" else None
    # A remote static key is given to dissononce only when the pattern has it in a pre-message.
    peer_pre = pattern.responder_pre_message_pattern if initiator else pattern.initiator_pre_message_pattern
    rs = PublicKey(bytes.fromhex(remote_public)) if remote_public != "-" and "s" in peer_pre else None

    handshake = HandshakeState(SymmetricState(CipherState(cipher), hash_function), dh)
    handshake.initialize(pattern, initiator, b"", s=s, rs=rs)

    ciphers = None
    index = 0
    while ciphers is None:
        if (index % 2 == 0) == initiator:
            message = bytearray()
            ciphers = handshake.write_message(b"", message)
            write_all(frame(bytes(message)))
        else:
            payload = bytearray()
            ciphers = handshake.read_message(read_frame(), payload)
            if payload:
                fail("unexpected handshake payload %r" % bytes(payload))
        index += 1

    c1, c2 = ciphers
    stream = Stream(c1, c2) if initiator else Stream(c2, c1)
    remote = handshake.rs.data if handshake.rs is not None else b""
    stream.send_message(handshake.symmetricstate.get_handshake_hash() + remote)

    while True:
        (length,) = struct.unpack("<I", stream.receive(4))
        if length == 0xFFFFFFFF:
            return 0
        body = stream.receive(length)
        received_digest = stream.receive(32)
        if digest(body) != received_digest:
            fail("digest mismatch on a message of %d bytes" % length)
        stream.send_message(body[::-1])


def read_line():
    """One spec line, or None at end of input."""
    data = b""
    while not data.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            if data:
                fail("truncated session line", 4)
            return None
        data += byte
    return data.decode().split()


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--sessions":
        while True:
            spec = read_line()
            if spec is None:
                return 0
            if len(spec) != 4:
                fail("bad session line %r" % spec, 2)
            run_session(*spec)
    if len(sys.argv) != 5:
        fail(__doc__, 2)
    return run_session(*sys.argv[1:5])


if __name__ == "__main__":
    sys.exit(main())
