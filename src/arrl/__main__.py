import sys

from arrl.cli import main

sys.exit(main())
