import sys

from equikit.cli.main import main

sys.exit(main())
