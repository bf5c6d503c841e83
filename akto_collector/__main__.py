import sys

from akto_collector.cli import main

sys.exit(main())
