#!/usr/bin/env python3
"""
Captures WireGuard transport datagrams (type 4) that this namespace sends to <dst ip>:<dst port>, as seen on
<ifname> (AF_PACKET, inside a test namespace), so a fuzzer can use live receiver indexes and replay real packets.
argv: <ifname> <dst ip> <dst port> <count> <timeout s>
Prints one JSON line: {"indexes": [...], "packets": ["<hex>", ...]}.
"""
import json
import socket
import struct
import sys
import time

ifname, dst, port_s, count_s, timeout_s = sys.argv[1:6]
dst_b, port, count = socket.inet_aton(dst), int(port_s), int(count_s)
# ETH_P_ALL: outgoing frames reach only "all protocols" taps.
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((ifname, 0))
s.settimeout(0.2)
deadline = time.time() + float(timeout_s)
packets, indexes = [], []
while len(packets) < count and time.time() < deadline:
    try:
        f, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_OUTGOING or len(f) < 14 + 20 + 8 or f[12:14] != b'\x08\x00':
        continue
    ip = f[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] != 17 or ip[16:20] != dst_b:
        continue
    udp = ip[ihl:]
    if struct.unpack('!H', udp[2:4])[0] != port:
        continue
    wg = udp[8:]
    if len(wg) >= 32 and wg[0] == 4:
        packets.append(wg.hex())
        idx = struct.unpack('<I', wg[4:8])[0]
        if idx not in indexes:
            indexes.append(idx)
print(json.dumps({'indexes': indexes, 'packets': packets}))
