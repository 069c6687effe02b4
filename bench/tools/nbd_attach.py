#!/usr/bin/env python3
"""Times an NBD attach: connect, fixed-newstyle handshake with NBD_OPT_GO, one 4 KiB read.

Usage: nbd_attach.py HOST PORT EXPORT [EXPORT...]   -> one line per export: "<name> <ms>"
       nbd_attach.py --wait HOST PORT EXPORT SECONDS -> retries until the read succeeds; prints ms waited
Written for the benchmarks (no libnbd start-up cost in the figure)."""
import socket, struct, sys, time

IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise ConnectionError("server closed the connection")
        b += c
    return bytes(b)


def attach(host, port, name):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        magic, opt, _flags = struct.unpack(">QQH", recv_exact(s, 18))
        if magic != 0x4E42444D41474943 or opt != IHAVEOPT:
            raise ConnectionError("not a newstyle NBD server")
        s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        n = name.encode()
        s.sendall(struct.pack(">QII", IHAVEOPT, 7, 4 + len(n) + 2) + struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
        while True:
            magic, _o, typ, length = struct.unpack(">QIII", recv_exact(s, 20))
            recv_exact(s, length)
            if magic != REPLY_MAGIC:
                raise ConnectionError("bad option reply")
            if typ == 1:
                break
            if typ & 0x80000000:
                raise ConnectionError(f"export {name}: option error {typ:#x}")
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 4096))
        magic, err, _cookie = struct.unpack(">IIQ", recv_exact(s, 16))
        if magic != 0x67446698 or err:
            raise ConnectionError(f"read failed: {err}")
        recv_exact(s, 4096)
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 2, 0, 0))
    finally:
        s.close()


if sys.argv[1] == "--wait":
    host, port, name, limit = sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    t0 = time.perf_counter()
    while True:
        try:
            attach(host, port, name)
            print(round((time.perf_counter() - t0) * 1000))
            break
        except (OSError, ConnectionError):
            if time.perf_counter() - t0 > limit:
                print("timeout")
                sys.exit(1)
            time.sleep(0.01)
else:
    host, port = sys.argv[1], int(sys.argv[2])
    for name in sys.argv[3:]:
        t0 = time.perf_counter()
        attach(host, port, name)
        print(name, round((time.perf_counter() - t0) * 1000, 2))
