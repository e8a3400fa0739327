"""Network, DNS and HTTP: resolve public names through the system resolver, query public DNS servers directly over
UDP, and fetch a URL. Nothing may resolve or answer."""

import socket
import struct
import urllib.request


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def query(server):
    """A raw DNS query for pypi.org (type A) to `server`:53."""
    name = b"".join(bytes([len(p)]) + p for p in b"pypi.org".split(b".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(packet, (server, 53))
        return s.recvfrom(512)[0][:12]


def resolvers():
    try:
        with open("/etc/resolv.conf") as f:
            return [line.split()[1] for line in f if line.startswith("nameserver")]
    except OSError:
        return []


for name in ("pypi.org", "github.com", "example.com"):
    attempt(f"getaddrinfo {name}", lambda name=name: socket.getaddrinfo(name, 443))
for server in ["8.8.8.8", "1.1.1.1", *resolvers()]:
    attempt(f"dns query via {server}", lambda server=server: query(server))
attempt("https://pypi.org", lambda: urllib.request.urlopen("https://pypi.org/simple/", timeout=2).status)
print("done: dns probed", flush=True)
