"""The ``calib`` command: ``run``/``verify``/``ls``/``show``/``diff`` (``main``) and ``ground-truth``."""
