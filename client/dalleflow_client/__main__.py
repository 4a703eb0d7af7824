"""python -m dalleflow_client generate "a red circle" """

import sys

from .cli import main

sys.exit(main())
