"""Figures and reports built from jacspec results (matplotlib, Agg backend).

Every module here needs matplotlib (the ``report`` extra): importing this package without
it raises :class:`~jacspec._util.extras.MissingExtraError`, one line naming the extra, before
any figure module is loaded.
"""

from jacspec._util.extras import require

require("matplotlib", "report", "jacspec.report (figures and the HTML report)")
