import sys

from virtime.cli import main

sys.exit(main())
