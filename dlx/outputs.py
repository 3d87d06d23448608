"""Where a command may write its outputs: a folder that exists or can be made, checked before any work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dlx.errors import DlxError


def check_output_folder(path: str | os.PathLike[str], default: bool = False, option: str = "--output") -> Path:
    """``path`` when it is a folder or can be made one; a one-line DlxError when it or a parent is a file.

    Called before anything is computed or drawn. ``option``: the option or key the path came from, named in the
    message. ``default``: dlx chose the path, not the user's ``option`` (the message then names the path and
    points at the option).
    """
    path = Path(path)
    label, advice = (str(path), f"give a folder with {option}") if default else (f"{option} {path}", "give a folder")
    for folder in (path, *path.parents):
        try:
            mode = os.stat(folder).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there yet (or below a file: the loop reaches that file)
        except OSError as e:
            raise DlxError(f"{label}: {e.strerror}") from None
        if stat.S_ISDIR(mode):
            return path
        where = "" if folder == path else f"{folder} "
        what = "a file" if stat.S_ISREG(mode) else "not a folder"
        raise DlxError(f"{label}: {where}is {what}; {advice}")
    return path
