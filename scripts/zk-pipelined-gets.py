#!/usr/bin/env python3
"""Pipelined ZooKeeper reads on one connection: what a client that does not
wait for each reply (kazoo's *_async, Curator's background ops) gets.

    scripts/zk-pipelined-gets.py HOST PORT [TOTAL] [WINDOW]

Opens a session by hand (the jute ConnectRequest), makes sure /b exists
with a 256-byte value, then sends getData /b in windows of WINDOW requests
written at once, reading the WINDOW replies before the next window, until
TOTAL gets are answered. Prints gets/s. Needs only Python 3. Run it against
`synod dev` (127.0.0.1 2181) and a ZooKeeper server in the same session,
alternating, and compare server CPU from /proc/PID/stat.
"""
import socket
import struct
import sys
import time


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(2)
    host, port = sys.argv[1], int(sys.argv[2])
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    window = int(sys.argv[4]) if len(sys.argv) > 4 else 100
    if total <= 0 or window <= 0:
        sys.exit("error: TOTAL and WINDOW must be positive")
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = bytearray()

    def send(body):
        sock.sendall(struct.pack(">i", len(body)) + body)

    def frame():
        nonlocal pending
        while True:
            if len(pending) >= 4:
                n = struct.unpack(">i", pending[:4])[0]
                if len(pending) >= 4 + n:
                    f = bytes(pending[4:4 + n])
                    del pending[:4 + n]
                    return f
            data = sock.recv(1 << 20)
            if not data:
                sys.exit("error: the server closed the connection")
            pending += data

    def jstr(b):
        return struct.pack(">i", len(b)) + b

    # ConnectRequest: protocol, last zxid, timeout, session, password, readOnly.
    send(struct.pack(">iqiq", 0, 0, 30000, 0) + jstr(b"\0" * 16) + b"\0")
    frame()
    path = b"/b"
    acl = struct.pack(">i", 1) + struct.pack(">i", 31) + jstr(b"world") + jstr(b"anyone")
    send(struct.pack(">ii", 1, 1) + jstr(path) + jstr(b"") + acl + struct.pack(">i", 0))
    frame()  # created, or NODEEXISTS
    send(struct.pack(">ii", 2, 5) + jstr(path) + jstr(b"x" * 256) + struct.pack(">i", -1))
    reply = frame()
    if struct.unpack(">i", reply[12:16])[0] != 0:
        sys.exit("error: setData /b failed")
    xid = 2
    started = time.time()
    done = 0
    while done < total:
        out = bytearray()
        for _ in range(window):
            xid += 1
            body = struct.pack(">ii", xid, 4) + jstr(path) + b"\0"
            out += struct.pack(">i", len(body)) + body
        sock.sendall(out)
        for _ in range(window):
            reply = frame()
            if struct.unpack(">i", reply[12:16])[0] != 0:
                sys.exit("error: a getData failed")
        done += window
    elapsed = time.time() - started
    print(f"{done / elapsed:.0f} gets/s ({done} gets, window {window})")


if __name__ == "__main__":
    main()
