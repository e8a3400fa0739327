"""Network, TCP: connect to a listener the test opens on the host (127.0.0.1 and every host address, IPv4 and IPv6)
and send it bytes. The sandbox has no route out: every attempt must fail and the listener must see nothing."""

import socket

PORT = int("{{TCP_PORT}}")
HOST_IPS = [ip for ip in "{{HOST_IPS}}".split(",") if ip]


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def connect(host, family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect((host, PORT))
        s.sendall(b"exfiltrated by train.py\n")
        return f"connected to {host}:{PORT}"


for ip in ["127.0.0.1", *HOST_IPS]:
    attempt(f"tcp {ip}:{PORT}", lambda ip=ip: connect(ip))
attempt(f"tcp [::1]:{PORT}", lambda: connect("::1", socket.AF_INET6))
attempt("tcp 1.1.1.1:80", lambda: socket.create_connection(("1.1.1.1", 80), timeout=2).close() or "internet")
print("done: network probed", flush=True)
