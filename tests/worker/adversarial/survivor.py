"""A background process that tries to survive the run: fork twice, start a new session, drop the environment
(and with it the run token a sandbox without namespaces would look for) and become a shell loop that appends to
a file in the work dir forever; the script itself exits 0 right away. After the run the file must stop growing."""

import os
import time

ALIVE = "/arrl/work/alive.txt"
LOOP = f"while :; do echo x >> {ALIVE}; sleep 0.05; done"

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execve("/bin/sh", ["sh", "-c", LOOP], {})
    os._exit(0)
deadline = time.monotonic() + 5
while not os.path.exists(ALIVE) and time.monotonic() < deadline:
    time.sleep(0.02)
print("INFO the survivor is running", flush=True)
