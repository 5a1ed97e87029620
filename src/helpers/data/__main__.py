"""``python -m helpers.data``: print the calibration-slice summary of a dataset."""

from helpers.data.datasets import _main

raise SystemExit(_main())
