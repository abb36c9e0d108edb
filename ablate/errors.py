"""Errors a user can cause and fix: the CLI prints them as one message and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input (a file, a study, a flag), not a bug in ablate."""


class DataError(UserError):
    """A data file that cannot be read as it is; the message names the file and line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")
        super().__init__(text)
