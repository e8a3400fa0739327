"""Disk filler: write file after file into the work dir, each below the per-file size limit so that the limit
never triggers (bounded at 1 GiB so that a broken sandbox cannot fill the test machine's disk). The sandbox must
stop the run when the work dir grows past its total limit (crash)."""

import os

block = os.urandom(1 << 20) * 4
written = files = 0
try:
    while written < 1 << 30:
        with open(f"/arrl/work/fill-{files}.bin", "wb") as f:
            for _ in range(8):  # 32 MB a file
                f.write(block)
                written += len(block)
        files += 1
except OSError as e:
    print(f"INFO write failed: {e}", flush=True)
print(f"FILLED {written >> 20} MB in {files} files", flush=True)
