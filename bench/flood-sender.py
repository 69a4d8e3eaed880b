#!/usr/bin/env python3
"""
Handshake-initiation flood for bench/flood.ts, run inside the bench's flooding namespace (its packets
reach only the veth to the agent's namespace). Sends the given initiations (valid mac1 for the agent's
key, junk otherwise) over a raw socket with spoofed sources, random addresses inside <spoof CIDR> and
random ports, at <rate> a second for <seconds>, paced every millisecond.
argv: <dst ip> <dst port> <rate> <seconds> <spoof CIDR> <file: one initiation in hex per line>
Prints one JSON line: datagrams sent, seconds taken.
"""
import ipaddress
import json
import random
import socket
import struct
import sys
import time

dst_s, port_s, rate_s, seconds_s, cidr_s, msgs_file = sys.argv[1:7]
dst = socket.inet_aton(dst_s)
port = int(port_s)
rate = int(rate_s)
seconds = float(seconds_s)
net = ipaddress.ip_network(cidr_s)
base = int(net.network_address)
span = net.num_addresses - 2
with open(msgs_file) as f:
    msgs = [bytes.fromhex(line.strip()) for line in f if line.strip()]
rng = random.Random()

# IPPROTO_RAW implies IP_HDRINCL; the kernel fills the IP checksum and id. UDP checksum 0: none.
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

# Prebuilt datagrams (IP header with a placeholder source, UDP header, message), patched per send.
templates = []
for m in msgs:
    total = 20 + 8 + len(m)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, 0, 0, 64, socket.IPPROTO_UDP, 0, b'\0\0\0\0', dst)
    udp = struct.pack('!HHHH', 0, port, 8 + len(m), 0)
    templates.append(bytearray(ip + udp + m))

sent = 0
start = time.monotonic()
end = start + seconds
per_ms = rate / 1000.0
due = 0.0
while True:
    now = time.monotonic()
    if now >= end:
        break
    target = int((now - start) * 1000 * per_ms)
    while sent < target:
        d = templates[sent % len(templates)]
        struct.pack_into('!I', d, 12, base + 1 + rng.randrange(span))
        struct.pack_into('!H', d, 20, 1024 + rng.randrange(64000))
        try:
            s.sendto(d, (dst_s, 0))
        except OSError:
            pass
        sent += 1
    time.sleep(0.001)
print(json.dumps({'sent': sent, 'seconds': round(time.monotonic() - start, 2)}))
