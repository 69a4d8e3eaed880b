#!/usr/bin/env python3
"""
LAN-side fuzzer for an exit node: raw Ethernet frames (AF_PACKET) from a LAN host's interface to the
exit node's LAN MAC, run inside the LAN host's test namespace (frames never leave that veth).
argv: <ifname> <exit node's LAN MAC> <LAN host IP> <client virtual IP> <count> <sources> [kinds]
sources: 'lan' (the LAN host's own address and other addresses inside 172.26.0.0/20) or 'forged' (overlay
addresses and public addresses outside the exit node's ProvidesRoutes); kinds: comma-separated, default all.
Kinds: well-formed but unsolicited ICMP/TCP/UDP to overlay addresses from the LAN host's own and forged
sources; bad IHL, IHL beyond the data, bad total length, bad header checksum; IP options; fragments
(tiny, overlapping, random offsets); ICMP errors quoting made-up flows; IPv6; random bytes as IPv4.
Prints one JSON line with the number of frames sent per kind.
"""
import json
import random
import socket
import struct
import sys

ifname, dst_mac_s, lan_ip, client_va, count_s = sys.argv[1:6]
source_mode = sys.argv[6]
only = sys.argv[7].split(',') if len(sys.argv) > 7 else None
rng = random.Random()
count = int(count_s)
dst_mac = bytes.fromhex(dst_mac_s.replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src_mac = s.getsockname()[4]
eth4 = dst_mac + src_mac + b'\x08\x00'
eth6 = dst_mac + src_mac + b'\x86\xdd'


def ip(a):
    return socket.inet_aton(a)


def csum(b):
    if len(b) % 2:
        b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return (~t) & 0xFFFF


def rand_overlay():
    return struct.pack('!I', (100 << 24 | 64 << 16) + rng.randrange(1 << 22))


def sources():
    if source_mode == 'lan':
        # A few neighbours only: ICMP errors the exit node's kernel sends back to thousands of random LAN sources
        # would fill its neighbour table and cost the real LAN host its entry (a kernel effect, not the agent's).
        return rng.choice([ip(lan_ip), ip(lan_ip), ip('172.26.0.%d' % rng.randrange(240, 250))])
    return rng.choice([ip('100.64.77.77'), ip(client_va), rand_overlay(), ip('198.51.100.%d' % rng.randrange(1, 255)), struct.pack('!I', rng.getrandbits(32))])


def dests():
    return rng.choice([ip(client_va), ip(client_va), rand_overlay()])


def l4(proto, src, dst):
    if proto == 1:
        body = struct.pack('!BBHHH', 8, 0, 0, rng.getrandbits(16), rng.getrandbits(16)) + rng.randbytes(rng.randrange(0, 64))
        return body[:2] + struct.pack('!H', csum(body)) + body[4:]
    if proto == 6:
        flags = rng.choice([0x02, 0x10, 0x12, 0x04, 0x11, 0x18, rng.getrandbits(8)])
        return struct.pack('!HHIIBBHHH', rng.getrandbits(16), rng.choice([22, 80, 443, rng.getrandbits(16)]), rng.getrandbits(32), rng.getrandbits(32),
                           0x50, flags, 65535, 0, 0) + rng.randbytes(rng.randrange(0, 32))
    if proto == 17:
        body = rng.randbytes(rng.randrange(0, 64))
        return struct.pack('!HHHH', rng.getrandbits(16), rng.getrandbits(16), 8 + len(body), 0) + body
    return rng.randbytes(rng.randrange(0, 64))


def ipv4(src, dst, proto, payload, ihl=5, tl=None, frag=0, opts=b'', good_csum=True, ttl=64):
    hdr_len = 20 + len(opts)
    total = hdr_len + len(payload) if tl is None else tl
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | (ihl & 15), 0, total & 0xFFFF, rng.getrandbits(16), frag, ttl, proto, 0, src, dst) + opts
    c = csum(h[:max(20, min(len(h), (ihl & 15) * 4))]) if good_csum else rng.getrandbits(16)
    return h[:10] + struct.pack('!H', c) + h[12:] + payload


def unsolicited():
    src, dst = sources(), dests()
    proto = rng.choice([1, 6, 17, 47, rng.randrange(256)])
    return eth4 + ipv4(src, dst, proto, l4(proto, src, dst))


def bad_ihl():
    src, dst = sources(), dests()
    return eth4 + ipv4(src, dst, 17, l4(17, src, dst), ihl=rng.randrange(0, 5))


def ihl_beyond():
    src, dst = sources(), dests()
    return eth4 + ipv4(src, dst, 6, rng.randbytes(rng.randrange(0, 20)), ihl=15, tl=rng.randrange(20, 60))


def bad_total_length():
    src, dst = sources(), dests()
    p = l4(6, src, dst)
    return eth4 + ipv4(src, dst, 6, p, tl=rng.choice([0, 19, 20, 21, 20 + len(p) + rng.randrange(1, 2000), 0xFFFF, rng.getrandbits(16)]))


def bad_checksum():
    src, dst = sources(), dests()
    return eth4 + ipv4(src, dst, 1, l4(1, src, dst), good_csum=False)


def options():
    src, dst = sources(), dests()
    n = rng.randrange(1, 11) * 4
    opts = rng.choice([b'\x01' * n, bytes([7, n - 1 if n > 3 else 3, 4]) + b'\0' * (n - 3), rng.randbytes(n), b'\x94\x04\0\0' + b'\x01' * (n - 4)])[:n]
    proto = rng.choice([1, 6, 17])
    return eth4 + ipv4(src, dst, proto, l4(proto, src, dst), ihl=5 + n // 4, opts=opts)


def fragment():
    src, dst = sources(), dests()
    proto = rng.choice([1, 6, 17])
    mf = rng.choice([0, 0x2000])
    off = rng.choice([0, 1, 2, rng.randrange(8192)])
    payload = l4(proto, src, dst)[: rng.choice([1, 8, 16, 64])] if off == 0 else rng.randbytes(rng.choice([8, 16, 64, 1200]))
    return eth4 + ipv4(src, dst, proto, payload, frag=mf | off | rng.choice([0, 0, 0x4000]))


def icmp_error():
    src, dst = sources(), dests()
    inner_src, inner_dst = dst, ip(lan_ip)
    quoted = ipv4(inner_src, inner_dst, 17, struct.pack('!HHHH', rng.getrandbits(16), rng.getrandbits(16), 8, 0))
    body = struct.pack('!BBHI', rng.choice([3, 11, 12, 5]), rng.randrange(16), 0, 0) + quoted + rng.randbytes(rng.randrange(0, 600))
    body = body[:2] + struct.pack('!H', csum(body)) + body[4:]
    return eth4 + ipv4(src, dst, 1, body)


def ipv6():
    payload = rng.randbytes(rng.randrange(0, 80))
    dst6 = rng.choice([b'\0' * 10 + b'\xff\xff' + ip(client_va), b'\xfd' + rng.randbytes(15), rng.randbytes(16)])
    return eth6 + struct.pack('!IHBB', 0x60000000, len(payload), rng.choice([6, 17, 58, 44]), 64) + rng.randbytes(16) + dst6 + payload


def junk():
    b = bytearray(rng.randbytes(rng.randrange(1, 200)))
    if rng.random() < 0.7:
        b[0] = 0x40 | (b[0] & 15)
    return eth4 + bytes(b)


KINDS = [k for k in [unsolicited, bad_ihl, ihl_beyond, bad_total_length, bad_checksum, options, fragment, icmp_error, ipv6, junk]
         if only is None or k.__name__ in only]
# A pool of distinct frames, sent round-robin (building frames in Python is slower than sending them).
pool = []
for i in range(min(count, 40000)):
    k = KINDS[i % len(KINDS)]
    pool.append((k.__name__, k()))
sent = {k.__name__: 0 for k in KINDS}
n = 0
errors = 0
while n < count:
    name, f = pool[n % len(pool)]
    try:
        s.send(f[:1514])
        sent[name] += 1
    except OSError:
        errors += 1
    n += 1
print(json.dumps({'sent': sum(sent.values()), 'errors': errors, 'kinds': sent}))
