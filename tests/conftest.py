"""Suite-wide set-up.

absl (imported by rouge-score) creates a logging handler bound to ``sys.stderr`` as it is at import time, which
under pytest is a capture file. submitit's ``logging.config.dictConfig`` later closes every existing handler, and
absl's handler then closes that stream unless it is the *current* stderr: pytest's capture file gets closed and
the session dies ("lost sys.stderr"). Binding absl's handler to the process's real stderr avoids it.
"""

import sys

import absl.logging

absl.logging.get_absl_handler().python_handler.stream = sys.__stderr__
