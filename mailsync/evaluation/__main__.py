"""`python -m mailsync.evaluation`: run the evaluation (see the package docstring)."""

from __future__ import annotations

import sys

from mailsync.evaluation.report import main

sys.exit(main())
