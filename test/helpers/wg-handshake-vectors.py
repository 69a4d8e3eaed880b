#!/usr/bin/env python3
"""
Known-answer vectors for the WireGuard handshake, computed independently of enclave's TypeScript.

Written from the WireGuard whitepaper (Donenfeld, "WireGuard: Next Generation Kernel Network
Tunnel", sections 5.4.2 to 5.4.7 and 5.4.6 for transport data), with primitives from other code
than ours: BLAKE2s, keyed BLAKE2s and HMAC from Python's hashlib/hmac, X25519 and
ChaCha20-Poly1305 from pyca/cryptography (OpenSSL). XChaCha20-Poly1305 (cookie replies) is
HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2, written out below) in front of OpenSSL's
ChaCha20-Poly1305.

Before printing anything the script checks itself against published vectors: HChaCha20
(draft section 2.2.1), AEAD_XChaCha20_Poly1305 (draft appendix A.3.1) and the cacophony vector
for Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s (the handshake core with another prologue and with
payloads, then the first transport message each way). It exits non-zero if any disagrees.

Run:   python3 test/helpers/wg-handshake-vectors.py      (needs python3-cryptography)
Prints the vectors as JSON; test/helpers/handshake-vectors.ts holds them as constants, used by
test/unit/handshake-vectors.test.ts.
"""

import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# ---- primitives (whitepaper section 5.4) ----


def HASH(*parts):
    return hashlib.blake2s(b"".join(parts)).digest()


def MAC(key, data):
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def HMAC(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def KDF(n, key, data):
    """KDF_n(key, input): HKDF with HMAC-BLAKE2s, n outputs of 32 bytes."""
    t0 = HMAC(key, data)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = HMAC(t0, prev + bytes([i]))
        out.append(prev)
    return out


def public_key(private):
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def DH(private, public):
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def AEAD(key, counter, plaintext, ad):
    """ChaCha20-Poly1305 with a nonce of 32 zero bits then the 64-bit little-endian counter."""
    return ChaCha20Poly1305(key).encrypt(b"\0\0\0\0" + struct.pack("<Q", counter), plaintext, ad)


def AEAD_OPEN(key, counter, ciphertext, ad):
    return ChaCha20Poly1305(key).decrypt(b"\0\0\0\0" + struct.pack("<Q", counter), ciphertext, ad)


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 7)


def HCHACHA20(key, nonce16):
    """draft-irtf-cfrg-xchacha-03 section 2.2: the ChaCha20 rounds without the final addition."""
    s = list(struct.unpack("<4I", b"expand 32-byte k") + struct.unpack("<8I", key) + struct.unpack("<4I", nonce16))
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def XAEAD(key, nonce24, plaintext, ad):
    """draft-irtf-cfrg-xchacha-03 section 2.3: subkey from the first 16 nonce bytes, then ChaCha20-Poly1305."""
    return ChaCha20Poly1305(HCHACHA20(key, nonce24[:16])).encrypt(b"\0\0\0\0" + nonce24[16:], plaintext, ad)


# ---- the handshake (whitepaper sections 5.4.2 and 5.4.3) ----
# `identifier` is the Noise prologue and `payload1`/`payload2` the Noise payloads of the two
# messages; WireGuard fixes them to its identifier string, the TAI64N timestamp and nothing.


def initiation_core(construction, identifier, s_priv_i, s_pub_r, e_priv_i, payload1):
    C = HASH(construction)
    H = HASH(C, identifier)
    H = HASH(H, s_pub_r)
    e_pub_i = public_key(e_priv_i)
    (C,) = KDF(1, C, e_pub_i)
    H = HASH(H, e_pub_i)
    C, k = KDF(2, C, DH(e_priv_i, s_pub_r))
    enc_static = AEAD(k, 0, public_key(s_priv_i), H)
    H = HASH(H, enc_static)
    C, k = KDF(2, C, DH(s_priv_i, s_pub_r))
    enc_payload = AEAD(k, 0, payload1, H)
    H = HASH(H, enc_payload)
    return {"ephemeral": e_pub_i, "static": enc_static, "payload": enc_payload, "C": C, "H": H}


def response_core(C, H, e_priv_r, e_pub_i, s_pub_i, psk, payload2):
    e_pub_r = public_key(e_priv_r)
    (C,) = KDF(1, C, e_pub_r)
    H = HASH(H, e_pub_r)
    (C,) = KDF(1, C, DH(e_priv_r, e_pub_i))
    (C,) = KDF(1, C, DH(e_priv_r, s_pub_i))
    C, tau, k = KDF(3, C, psk)
    H = HASH(H, tau)
    enc_payload = AEAD(k, 0, payload2, H)
    H = HASH(H, enc_payload)
    t_send_i, t_recv_i = KDF(2, C, b"")  # initiator sends with the first, responder with the second
    return {"ephemeral": e_pub_r, "payload": enc_payload, "C": C, "H": H, "t_send_i": t_send_i, "t_recv_i": t_recv_i}


CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"


def tai64n(unix_ns):
    """TAI64N: 2^62 + 10 + seconds, then nanoseconds; the nanoseconds rounded down to a multiple of
    2^24 as the Linux module and wireguard-go do (not in the paper; it hides clock detail)."""
    secs, nanos = divmod(unix_ns, 10**9)
    return struct.pack(">QI", 2**62 + 10 + secs, nanos & ~0xFFFFFF)


def with_macs(msg_without_macs, receiver_s_pub, cookie=None):
    """Appends mac1 = MAC(HASH(label-mac1 || Spub of the receiver), msg) and mac2 (zero without a cookie)."""
    mac1 = MAC(HASH(LABEL_MAC1, receiver_s_pub), msg_without_macs)
    mac2 = MAC(cookie, msg_without_macs + mac1) if cookie is not None else bytes(16)
    return msg_without_macs + mac1 + mac2


def transport(receiver_index, key, counter, payload):
    """Section 5.4.6: type 4, reserved, receiver, counter (LE), AEAD of the payload padded to 16 bytes."""
    padded = payload + bytes(-len(payload) % 16)
    return struct.pack("<B3xIQ", 4, receiver_index, counter) + AEAD(key, counter, padded, b"")


# ---- self-checks against published vectors ----


def check(name, got, want):
    if got != want:
        sys.exit(f"self-check failed: {name}\n got  {got.hex()}\n want {want.hex()}")


def self_check():
    check(
        "HChaCha20, draft-irtf-cfrg-xchacha-03 2.2.1",
        HCHACHA20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927")),
        bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"),
    )
    check(
        "AEAD_XChaCha20_Poly1305, draft-irtf-cfrg-xchacha-03 A.3.1",
        XAEAD(
            bytes(range(0x80, 0xA0)),
            bytes(range(0x40, 0x58)),
            b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
            bytes.fromhex("50515253c0c1c2c3c4c5c6c7"),
        ),
        bytes.fromhex(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
            "21f9664c97637da9768812f615c68b13b52e"
            "c0875924c1c7987947deafd8780acf49"
        ),
    )
    # cacophony's test vectors (used by the snow and noise-c test suites), the one for this protocol.
    v = {
        "prologue": "4a6f686e2047616c74",
        "psk": "54686973206973206d7920417573747269616e20706572737065637469766521",
        "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
        "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
        "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
        "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
        "handshake_hash": "f5191b875290abcd41347ac3622d9679688a7e980229cb937ef748336cfde0e5",
        "m": [
            (
                "4c756477696720766f6e204d69736573",
                "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8e2ad57527207feb5"
                "6253c9c94a9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab5000980c84831215f2441eba616548e832985"
                "464cf17e51ee93109008399a21f7e13f",
            ),
            (
                "4d757272617920526f746862617264",
                "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b8f007572dab03222"
                "17755c0632f365717edbf34d33e87a",
            ),
            ("462e20412e20486179656b", "8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
            ("4361726c204d656e676572", "07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
        ],
    }
    x = {k: bytes.fromhex(val) for k, val in v.items() if k != "m"}
    m = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in v["m"]]
    i = initiation_core(CONSTRUCTION, x["prologue"], x["init_static"], public_key(x["resp_static"]), x["init_ephemeral"], m[0][0])
    check("cacophony IKpsk2 message 1", i["ephemeral"] + i["static"] + i["payload"], m[0][1])
    r = response_core(i["C"], i["H"], x["resp_ephemeral"], i["ephemeral"], public_key(x["init_static"]), x["psk"], m[1][0])
    check("cacophony IKpsk2 message 2", r["ephemeral"] + r["payload"], m[1][1])
    check("cacophony IKpsk2 handshake hash", r["H"], x["handshake_hash"])
    check("cacophony IKpsk2 message 3 (initiator's first transport)", AEAD(r["t_send_i"], 0, m[2][0], b""), m[2][1])
    check("cacophony IKpsk2 message 4 (responder's first transport)", AEAD(r["t_recv_i"], 0, m[3][0], b""), m[3][1])


# ---- the WireGuard vectors ----


def fixed_private(label):
    """A fixed, clamped X25519 private key (as `wg genkey` would clamp it)."""
    k = bytearray(HASH(b"enclave known-answer test: " + label))
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def vectors():
    s_priv_i = fixed_private(b"initiator static")
    s_priv_r = fixed_private(b"responder static")
    e_priv_i = fixed_private(b"initiator ephemeral")
    e_priv_r = fixed_private(b"responder ephemeral")
    s_pub_i, s_pub_r = public_key(s_priv_i), public_key(s_priv_r)
    psk = HASH(b"enclave known-answer test: preshared key")
    index_i, index_r = 0xD00DFEED, 0x1BADB002
    time_ms = 1_700_000_000_123
    timestamp = tai64n(time_ms * 10**6)

    # Initiation (5.4.2): type 1, reserved, sender, ephemeral, static, timestamp, mac1, mac2.
    i = initiation_core(CONSTRUCTION, IDENTIFIER, s_priv_i, s_pub_r, e_priv_i, timestamp)
    init_body = struct.pack("<B3xI", 1, index_i) + i["ephemeral"] + i["static"] + i["payload"]
    initiation = with_macs(init_body, s_pub_r)
    mac1 = initiation[116:132]

    # Cookie reply (5.4.7) from the responder under load to the initiation from 198.18.0.1:51820:
    # cookie = MAC(Rm, source IP || source port), both in network byte order as the Linux module
    # hashes them (the paper leaves the encoding to the responder, the only party that computes it).
    cookie_secret = HASH(b"enclave known-answer test: cookie secret")
    src_ip, src_port = bytes([198, 18, 0, 1]), 51820
    cookie = MAC(cookie_secret, src_ip + struct.pack(">H", src_port))
    cookie_nonce = HASH(b"enclave known-answer test: cookie nonce")[:24]
    cookie_reply = (
        struct.pack("<B3xI", 3, index_i) + cookie_nonce + XAEAD(HASH(LABEL_COOKIE, s_pub_r), cookie_nonce, cookie, mac1)
    )
    # The same initiation sent again while holding that cookie: mac2 = MAC(cookie, msg up to mac2).
    initiation_mac2 = with_macs(init_body, s_pub_r, cookie)

    out = {
        "initiatorStaticPrivate": s_priv_i,
        "initiatorStaticPublic": s_pub_i,
        "responderStaticPrivate": s_priv_r,
        "responderStaticPublic": s_pub_r,
        "initiatorEphemeralPrivate": e_priv_i,
        "initiatorEphemeralPublic": i["ephemeral"],
        "responderEphemeralPrivate": e_priv_r,
        "responderEphemeralPublic": public_key(e_priv_r),
        "presharedKey": psk,
        "initiatorIndex": index_i,
        "responderIndex": index_r,
        "timeMs": time_ms,
        "tai64n": timestamp,
        "initiation": initiation,
        "initiationChainKey": i["C"],
        "initiationHash": i["H"],
        "cookieSecret": cookie_secret,
        "cookieSource": "198.18.0.1:51820",
        "cookie": cookie,
        "cookieNonce": cookie_nonce,
        "cookieReply": cookie_reply,
        "initiationWithMac2": initiation_mac2,
    }

    # Response (5.4.3), with the preshared key and with none (all zeros), then the transport keys
    # (5.4.5) and the first transport message each way (5.4.6): a 27-byte payload from the
    # initiator, a keepalive (empty payload) from the responder; then the initiator's message with
    # the same payload at counter 0x89abcdef (where the counter sits in the nonce matters).
    payload = b"known-answer transport test"
    for name, key in (("", psk), ("NoPsk", bytes(32))):
        r = response_core(i["C"], i["H"], e_priv_r, i["ephemeral"], s_pub_i, key, b"")
        response = with_macs(struct.pack("<B3xII", 2, index_r, index_i) + r["ephemeral"] + r["payload"], s_pub_i)
        out[f"response{name}"] = response
        out[f"responseHash{name}"] = r["H"]
        out[f"initiatorSendKey{name}"] = r["t_send_i"]
        out[f"initiatorRecvKey{name}"] = r["t_recv_i"]
        out[f"transportFromInitiator{name}"] = transport(index_r, r["t_send_i"], 0, payload)
        out[f"keepaliveFromResponder{name}"] = transport(index_i, r["t_recv_i"], 0, b"")
        out[f"transportFromInitiatorAtCounter{name}"] = transport(index_r, r["t_send_i"], 0x89ABCDEF, payload)
    out["transportPayload"] = payload
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in out.items()}


if __name__ == "__main__":
    self_check()
    print(json.dumps(vectors(), indent=2))
