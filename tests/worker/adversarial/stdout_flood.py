"""Flooding the log: 24 MB on stdout and 8 MB on stderr as fast as possible, then a last line. The log on disk must
stay within its cap (with a note of what was dropped), the tail must still hold the last line, and the host must
not stall."""

import sys
import time

line = "y" * 1023 + "\n"
chunk = line * 1024  # 1 MB
for _ in range(24):
    sys.stdout.write(chunk)
sys.stdout.flush()
for _ in range(8):
    sys.stderr.write(chunk)
sys.stderr.flush()
time.sleep(0.5)  # Docker forwards stdout and stderr separately: let stderr drain so the last line is last
print("THE END", flush=True)
