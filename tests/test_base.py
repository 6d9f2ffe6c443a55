from pathlib import Path

import pytest

from walbctr.image.debian_base import base_specs, dockerfile_packages, mmdebstrap_args
from walbctr.image.recipe import recipe_dir

DOCKERFILE = (recipe_dir() / "Dockerfile").read_text()


def test_package_lists_come_from_the_dockerfile() -> None:
    runtime, build = base_specs(DOCKERFILE)
    assert runtime.tag == "walbctr/base:bookworm-runtime"
    assert {"lvm2", "dmsetup", "util-linux", "thin-provisioning-tools"} <= set(runtime.packages)
    assert {"g++", "make", "libaio-dev"} <= set(build.packages)
    assert "g++" not in runtime.packages


def test_missing_arg_is_an_error() -> None:
    with pytest.raises(ValueError, match="ARG NOPE"):
        dockerfile_packages("FROM x\n", "NOPE")


def test_mmdebstrap_arguments() -> None:
    runtime, _ = base_specs(DOCKERFILE)
    args = mmdebstrap_args(runtime, Path("/tmp/x.tar"))
    assert args[:3] == ["mmdebstrap", "--variant=minbase", "--format=tar"]
    assert args[-2:] == ["bookworm", "/tmp/x.tar"]
    include = next(a for a in args if a.startswith("--include="))
    assert include.startswith("--include=usr-is-merged,")
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in args
    assert not any("http" in a for a in args)  # the mirror is Debian's default, never named
