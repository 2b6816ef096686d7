"""Run inside a test namespace: send raw frames, count frames seen, simple echo.

    frames.py send IFACE HEX...
    frames.py sniff IFACE SECONDS MARKERHEX...   prints 'ready', then JSON counts
    frames.py tcp-echo PORT SECONDS | udp-echo PORT SECONDS
    frames.py tcp-ask HOST PORT | udp-ask HOST PORT   exit 0 if the echo came back
Every loop here is bounded in time.
"""

import json
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def send(iface, frames):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    for frame in frames:
        sock.send(bytes.fromhex(frame))
    sock.close()


def _readable(sock, seconds):
    """Yield each time sock has data, for at most seconds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.time()))
        if not ready:
            return
        yield


def sniff(iface, seconds, markers):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    wanted = [bytes.fromhex(m) for m in markers]
    counts = dict((m, 0) for m in markers)
    print("ready", flush=True)
    for _ in _readable(sock, seconds):
        data, address = sock.recvfrom(65535)
        if address[2] == PACKET_OUTGOING:
            continue
        for marker, raw in zip(markers, wanted):
            if raw in data:
                counts[marker] += 1
    print(json.dumps(counts), flush=True)


def echo(kind, port, seconds):
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(4)
    print("ready", flush=True)
    for _ in _readable(sock, seconds):
        if kind == socket.SOCK_STREAM:
            conn, _ = sock.accept()
            conn.settimeout(2)
            try:
                conn.sendall(conn.recv(1024))
            except OSError:
                pass
            conn.close()
        else:
            data, peer = sock.recvfrom(1024)
            sock.sendto(data, peer)


def ask(kind, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.settimeout(2)
    message = b"vif-rules-echo"
    try:
        if kind == socket.SOCK_STREAM:
            sock.connect((host, port))
            sock.sendall(message)
            reply = sock.recv(1024)
        else:
            reply = b""
            for _ in range(3):  # UDP may lose the first datagram while ARP resolves
                sock.sendto(message, (host, port))
                try:
                    reply = sock.recvfrom(1024)[0]
                    break
                except socket.timeout:
                    continue
    except OSError as error:
        print("error: %s" % error)
        return 1
    return 0 if reply == message else 1


def main(argv):
    command = argv[0]
    if command == "send":
        send(argv[1], argv[2:])
    elif command == "sniff":
        sniff(argv[1], float(argv[2]), argv[3:])
    elif command in ("tcp-echo", "udp-echo"):
        kind = socket.SOCK_STREAM if command == "tcp-echo" else socket.SOCK_DGRAM
        echo(kind, int(argv[1]), float(argv[2]))
    elif command in ("tcp-ask", "udp-ask"):
        kind = socket.SOCK_STREAM if command == "tcp-ask" else socket.SOCK_DGRAM
        return ask(kind, argv[1], int(argv[2]))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
