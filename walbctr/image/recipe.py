"""Where the image recipe (images/walb-tools) is, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

from walbctr.errors import WalbctrError


def recipe_dir() -> Path:
    here = Path(__file__).resolve().parent.parent  # the walbctr package
    for candidate in (here / "_images" / "walb-tools", here.parent / "images" / "walb-tools"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise WalbctrError("the walb-tools image recipe (images/walb-tools/Dockerfile) is missing "
                       "from this installation", "reinstall walbctr")
