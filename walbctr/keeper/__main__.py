"""python3 -m walbctr.keeper CONFIG.json: the keeper's entry point in its image."""

import sys

from walbctr.keeper.duties import main

sys.exit(main(sys.argv))
