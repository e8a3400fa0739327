"""Binary garbage on the output: every byte value, invalid UTF-8, NUL runs, terminal escape sequences (clear
screen, set title, colours), carriage returns that overwrite earlier text, and a 2 MB line with no newline, then a
last line. The outcome must stay a readable, JSON-serializable record with the last line in its tail."""

import sys

out = sys.stdout.buffer
out.write(bytes(range(256)) * 64)
out.write(b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\n")
out.write(b"\0" * 4096 + b"\n")
out.write(b"\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[31;1mRED\x1b[0m\n")
out.write(b"val_bpb: 0.0001\r" + b" " * 20 + b"\rstatus: ok\n")
out.write(b"z" * (2 << 20))
out.write(b"\nTHE END\n")
out.flush()
