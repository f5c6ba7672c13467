"""The MiniMind Workbook: rebuild MiniMind module by module.

Importing this package installs the mode switch (see ``workbook._modes`` and the
``WORKBOOK_IMPL`` environment variable).  The notebooks use only this package::

    import workbook as wb
    wb.check("01")          # run stage 01's check; raises on failure
    wb.hint("01")           # the next hint
    wb.progress()           # every stage's status
"""
from . import _modes

try:
    _modes.install()
except _modes.ModeError:
    _modes.friendly_mode_errors()  # a command-line tool then prints one line, not a traceback
    raise

from .lab import check, hint, needs, progress, mode  # noqa: E402

__all__ = ["check", "hint", "needs", "progress", "mode"]
