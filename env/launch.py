"""Entry point of a training sandbox: `python -m env.launch train.py`.

Records the moment the interpreter is up (a `launch` record in the progress file), then
runs the script as `__main__`. The gap between sandbox spawn and `launch` is the
sandbox's own start-up; the gap between `launch` and `start` is the script's imports
and set-up.
"""

import json
import runpy
import sys
import time

from env import runtime


def main() -> None:
    script = sys.argv[1]
    with open(runtime.progress_path(), "a") as f:
        f.write(json.dumps({"event": "launch", "time": time.time()}) + "\n")
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
