"""Network, Unix sockets: connect to an abstract socket the test listens on, and to the host's well-known daemon
sockets (the Docker engine the test suite started, containerd, D-Bus). Reaching the Docker socket would be a full
escape; none of them may answer."""

import socket

ABSTRACT = "{{ABSTRACT_SOCK}}"
PATHS = ["{{DOCKER_SOCK}}", "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
         "/run/dbus/system_bus_socket", "/run/systemd/private"]


def attempt(what, fn):
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - a failure is the sandbox working
        print(f"BLOCKED {what}: {type(e).__name__}: {e}", flush=True)
        return None
    print(f"ESCAPED {what}: {got!r}"[:300], flush=True)
    return got


def connect(address):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(address)
        s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        return s.recv(64) or b"connected"


attempt(f"abstract unix socket @{ABSTRACT}", lambda: connect("\0" + ABSTRACT))
for path in PATHS:
    attempt(f"unix socket {path}", lambda path=path: connect(path))
print("done: unix sockets probed", flush=True)
