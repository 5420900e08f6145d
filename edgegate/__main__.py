import sys

from edgegate.cli.main import main

sys.exit(main())
