"""Memory hog: allocate and touch 64 MB after 64 MB (bounded at 2 GB, four times the limit the test sets) until
something stops it. The watchdog's resident-memory check (or the container's memory limit, or the data-segment
limit) must end the run as oom."""

chunks = []
for _ in range(32):
    chunks.append(b"x" * (64 << 20))  # written, so resident
print(f"INFO allocated {len(chunks) * 64} MB", flush=True)
