"""Image names: what `walbctr build` tags and what a layout runs by default."""

from __future__ import annotations

import re

REPOSITORY = "walbctr/walb-tools"
# The keeper's image: the walb-tools image's runtime plus Python (the Dockerfile's `keeper`
# target), built together with it and tagged alike.
KEEPER_REPOSITORY = "walbctr/walb-keeper"

# The walb-tools release walbctr builds by default: upstream's latest tag.
UPSTREAM_URL = "https://github.com/walb-linux/walb-tools"
UPSTREAM_VERSION = "1.0.19"
UPSTREAM_COMMIT = "d7295d205c94c88c606e66cc7489a37b65c3ada9"


def image_tag(version: str, revision: str, repository: str = REPOSITORY) -> str:
    """`walbctr/walb-tools:1.0.19-d7295d2`: the walb-tools version and the source revision.

    The revision is a commit for git sources, or a content hash for a directory, so two
    different sources never share a tag.
    """
    safe_version = re.sub(r"[^A-Za-z0-9_.-]", "_", version)
    return f"{repository}:{safe_version}-{short_revision(revision)}"


def short_revision(revision: str) -> str:
    """d7295d2 for a commit; tree-9d0c1a2b for a content hash (see source.py)."""
    return revision[:13] if revision.startswith("tree-") else revision[:7]


DEFAULT_IMAGE = image_tag(UPSTREAM_VERSION, UPSTREAM_COMMIT)


def keeper_image(server_image: str) -> str:
    """The keeper image that goes with `server_image`: the same tag, the keeper's name."""
    _name, sep, tag = server_image.rpartition(":")
    if not sep or "/" in tag:  # no tag (a ':' of a registry port is not one)
        return f"{KEEPER_REPOSITORY}:latest"
    return f"{KEEPER_REPOSITORY}:{tag}"
