#!/usr/bin/python3
"""Noise test vectors in the cacophony format, made and checked with python3-dissononce (Debian).

usage: noise_vectors.py generate TEMPLATE.json OUT.json
       noise_vectors.py verify < VECTORS.json

generate: replays every vector of TEMPLATE (the cacophony vectors of one suite: their keys, prologues
  and payloads) under each of the 8 Curve25519 suites, and writes the 7 suites other than the
  template's own to OUT, with dissononce's ciphertexts and handshake hashes. The template's own suite
  must come out byte for byte as the template has it: that checks this script.
verify: replays every vector read on stdin with dissononce and checks that it writes the same
  ciphertexts and handshake hash, and that it reads the given ciphertexts back to their payloads.
  Prints the number of vectors checked. Exit codes: 2 usage or missing dissononce, 3 a mismatch.

A vector: protocol_name; init_/resp_prologue, _ephemeral, _static (private keys), _remote_static
(public keys, when a pre-message needs them), all hex; messages: [{payload, ciphertext}], the
handshake messages then transport messages, the initiator sending the even ones; handshake_hash.
"""
import importlib
import json
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
    sys.stderr.write("noise_vectors.py: python3-dissononce is not installed (%s)\n" % error)
    sys.exit(2)

CIPHERS = {"ChaChaPoly": ChaChaPolyCipher, "AESGCM": AESGCMCipher}
HASHES = {"BLAKE2s": Blake2sHash, "BLAKE2b": Blake2bHash, "SHA256": SHA256Hash, "SHA512": SHA512Hash}


def fail(message, code=3):
    sys.stderr.write("noise_vectors.py: %s\n" % message)
    sys.exit(code)


class FixedEphemeralDH(X25519DH):
    """X25519 whose one generated key pair is the vector's ephemeral key (dissononce takes none)."""

    def __init__(self, ephemeral_hex):
        super().__init__()
        self.ephemeral = ephemeral_hex

    def generate_keypair(self, privatekey=None):
        if privatekey is None and self.ephemeral is not None:
            privatekey, self.ephemeral = PrivateKey(bytes.fromhex(self.ephemeral)), None
        return super().generate_keypair(privatekey)


def load_pattern(name):
    for family in ("interactive", "deferred"):
        try:
            module = importlib.import_module("dissononce.processing.handshakepatterns.%s.%s" % (family, name))
        except ImportError:
            continue
        return getattr(module, "%sHandshakePattern" % name)()
    fail("dissononce has no pattern %s" % name, 2)


def party(vector, side, initiator):
    parts = vector["protocol_name"].split("_")
    if len(parts) != 5 or parts[2] != "25519" or parts[3] not in CIPHERS or parts[4] not in HASHES:
        fail("unsupported protocol %s" % vector["protocol_name"], 2)
    dh = FixedEphemeralDH(vector.get(side + "_ephemeral"))
    state = HandshakeState(SymmetricState(CipherState(CIPHERS[parts[3]]()), HASHES[parts[4]]()), dh)
    s = vector.get(side + "_static")
    rs = vector.get(side + "_remote_static")
    state.initialize(load_pattern(parts[1]), initiator, bytes.fromhex(vector.get(side + "_prologue", "")),
                     s=X25519DH().generate_keypair(PrivateKey(bytes.fromhex(s))) if s else None,
                     rs=PublicKey(bytes.fromhex(rs)) if rs else None)
    return state


def replay(vector):
    """dissononce's ciphertexts and handshake hash for the vector's inputs; it also reads each given
    ciphertext (the vector's own, when present) back and checks the payload."""
    name = vector["protocol_name"]
    initiator, responder = party(vector, "init", True), party(vector, "resp", False)
    transport = None  # ((initiator's c1, c2), (responder's c1, c2))
    written = []
    handshake_hash = None
    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        given = bytes.fromhex(message["ciphertext"]) if "ciphertext" in message else None
        initiator_sends = index % 2 == 0
        read = bytearray()
        try:
            if transport is None:
                writer, reader = (initiator, responder) if initiator_sends else (responder, initiator)
                buffer = bytearray()
                writer_ciphers = writer.write_message(payload, buffer)
                written.append(bytes(buffer))
                reader_ciphers = reader.read_message(given if given is not None else bytes(buffer), read)
                if writer_ciphers is not None:
                    handshake_hash = initiator.symmetricstate.get_handshake_hash()
                    if responder.symmetricstate.get_handshake_hash() != handshake_hash:
                        fail("%s: the two sides disagree on the handshake hash" % name)
                    transport = ((writer_ciphers, reader_ciphers) if initiator_sends
                                 else (reader_ciphers, writer_ciphers))
            else:
                (i1, i2), (r1, r2) = transport
                sender, receiver = (i1, r1) if initiator_sends else (r2, i2)
                written.append(sender.encrypt_with_ad(b"", payload))
                read = receiver.decrypt_with_ad(b"", given if given is not None else written[-1])
        except Exception as error:  # dissononce refuses the given message (bad tag, wrong length)
            fail("%s: message %d is refused: %r" % (name, index, error))
        if bytes(read) != payload:
            fail("%s: message %d reads back as %s" % (name, index, bytes(read).hex()))
    if transport is None:
        fail("%s: the handshake did not complete within %d messages" % (name, len(vector["messages"])))
    return written, handshake_hash


def verify(vectors):
    for vector in vectors:
        name = vector["protocol_name"]
        written, handshake_hash = replay(vector)
        for index, (ours, message) in enumerate(zip(written, vector["messages"])):
            if ours.hex() != message["ciphertext"]:
                fail("%s: message %d differs:\n  given      %s\n  dissononce %s"
                     % (name, index, message["ciphertext"], ours.hex()))
        if "handshake_hash" in vector and handshake_hash.hex() != vector["handshake_hash"]:
            fail("%s: handshake hash differs: given %s, dissononce %s"
                 % (name, vector["handshake_hash"], handshake_hash.hex()))
    return len(vectors)


def generate(template_path, out_path):
    with open(template_path) as f:
        template = json.load(f)["vectors"]
    suites = set("_".join(v["protocol_name"].split("_")[3:]) for v in template)
    if len(suites) != 1:
        fail("the template holds more than one suite: %s" % sorted(suites), 2)
    own = suites.pop()
    verify(template)
    out = []
    for cipher in CIPHERS:
        for hash_name in HASHES:
            suite = "%s_%s" % (cipher, hash_name)
            if suite == own:
                continue
            for vector in template:
                v = dict(vector)
                v["protocol_name"] = "_".join(vector["protocol_name"].split("_")[:3] + [cipher, hash_name])
                messages = [{"payload": m["payload"]} for m in vector["messages"]]
                v["messages"] = messages
                written, handshake_hash = replay(v)
                for message, ciphertext in zip(messages, written):
                    message["ciphertext"] = ciphertext.hex()
                v["handshake_hash"] = handshake_hash.hex()
                out.append(v)
    with open(out_path, "w") as f:
        json.dump({"source": "generated by Tests/NoiseTests/Fixtures/noise_vectors.py with python3-dissononce from the "
                             "inputs (keys, prologues, payloads) of the cacophony vectors for %s: %s" % (own, template_path.split("/")[-1]),
                   "vectors": out}, f, indent=1)
        f.write("\n")
    print("%d vectors written (the template's %d reproduced)" % (len(out), len(template)))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) == 2 and sys.argv[1] == "verify":
        print(verify(json.load(sys.stdin)["vectors"]))
        return 0
    fail(__doc__, 2)


if __name__ == "__main__":
    sys.exit(main())
