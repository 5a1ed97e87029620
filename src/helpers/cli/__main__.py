"""``python -m helpers.cli`` is ``calib``."""

from helpers.cli.main import main

raise SystemExit(main())
