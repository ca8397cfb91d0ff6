import sys

from augkd.cli import main

sys.exit(main())
