"""drus's error for a bad argument that the user gave as a command-line option.

Library functions that the ``drus`` command calls name the option (or argument) the user typed, so
that the message says what to change; :class:`OptionError` carries that name apart from the problem,
and the command line prints it as click prints its own option errors
(``Error: Invalid value for '--sigma0': must be a finite number ≥ 0, got nan``).
"""

from __future__ import annotations

__all__ = ["OptionError"]


class OptionError(ValueError):
    """A bad value of ``option`` (``"--sigma0"``, ``"OBSERVATION"``, …): ``problem`` says what is wrong and the fix.

    ``str(exc)`` is ``"<option>: <problem>"``, so a library caller reads the same information.
    """

    def __init__(self, option: str, problem: str):
        self.option, self.problem = option, problem
        super().__init__(f"{option}: {problem}")
