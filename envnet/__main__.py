import sys

from envnet.cli import main

sys.exit(main())
