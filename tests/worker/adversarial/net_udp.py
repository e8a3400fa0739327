"""Network, UDP: send datagrams to a socket the test opens on the host and wait for its reply. UDP gives no error
when nothing arrives, so the test counts what its socket received: it must be nothing."""

import socket

PORT = int("{{UDP_PORT}}")
HOST_IPS = [ip for ip in "{{HOST_IPS}}".split(",") if ip]


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def ping(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for _ in range(3):
            s.sendto(b"exfiltrated by train.py", (host, PORT))
        return s.recvfrom(100)  # the test's socket answers every datagram


for ip in ["127.0.0.1", *HOST_IPS]:
    attempt(f"udp {ip}:{PORT}", lambda ip=ip: ping(ip))
print("done: udp probed", flush=True)
