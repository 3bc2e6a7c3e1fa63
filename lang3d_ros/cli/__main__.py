"""python -m lang3d_ros.cli == lang3d."""

import sys

from lang3d_ros.cli import main

sys.exit(main())
