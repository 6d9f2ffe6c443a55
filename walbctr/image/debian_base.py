"""Base images made from Debian packages, for engines that cannot pull from a registry.

mmdebstrap builds a Debian root filesystem from the Debian package archive alone, and
`docker import` turns it into an image. Two bases: the runtime base carries what the
walb servers load and call (so the final stage needs no package download), the build
base adds the compiler and headers (so compiling needs none either).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from walbctr import __version__

SUITE = "bookworm"
# WALBCTR_BASE_REPOSITORY names the bases elsewhere (the tests make throwaway ones).
REPOSITORY = os.environ.get("WALBCTR_BASE_REPOSITORY", "walbctr/base")

# Documentation, man pages and translations are a third of a minimal Debian; the license
# texts stay.
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)


_PERL_STACK = ("usrmerge", "libfile-find-rule-perl", "libnumber-compare-perl",
               "libtext-glob-perl", "perl", "perl-modules-5.36", "libperl5.36")


@dataclass(frozen=True)
class BaseSpec:
    tag: str
    packages: tuple[str, ...]
    purpose: str


def dockerfile_packages(dockerfile: str, arg: str) -> tuple[str, ...]:
    """The package list an `ARG NAME="..."` line of the Dockerfile gives by default.

    The Dockerfile is the one place the lists are written; the bases carry the same.
    """
    match = re.search(rf'^ARG {arg}="([^"]*)"', dockerfile, flags=re.M)
    if match is None:
        raise ValueError(f"the Dockerfile has no ARG {arg}=\"...\" line")
    return tuple(match.group(1).split())


def base_specs(dockerfile: str, suite: str = SUITE) -> tuple[BaseSpec, BaseSpec]:
    runtime = dockerfile_packages(dockerfile, "RUNTIME_DEPS")
    build = dockerfile_packages(dockerfile, "BUILD_DEPS")
    return (
        BaseSpec(f"{REPOSITORY}:{suite}-runtime", runtime, "walb-tools runtime base"),
        BaseSpec(f"{REPOSITORY}:{suite}-build", build, "walb-tools build base"),
    )


def mmdebstrap_args(spec: BaseSpec, output: Path, suite: str = SUITE) -> list[str]:
    args = ["mmdebstrap", "--variant=minbase", "--format=tar",
            '--aptopt=APT::Install-Recommends "false"']
    args += [f"--dpkgopt={opt}" for opt in _DPKG_EXCLUDES]
    # mmdebstrap satisfies init-system-helpers' "usrmerge | usr-is-merged" with usrmerge,
    # which drags perl (50 MB) into every image; usr-is-merged serves as well.
    args.append("--include=" + ",".join(("usr-is-merged", *spec.packages)))
    # mmdebstrap marks everything manually installed, so autoremove would keep perl; dpkg
    # removes the set, and leaves any piece that a requested package still depends on.
    args.append('--customize-hook=chroot "$1" dpkg --purge ' + " ".join(_PERL_STACK)
                + " || true")
    # Package lists are 40+ MB and stale by the time anyone uses the image.
    args.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    return [*args, suite, str(output)]


def import_changes(spec: BaseSpec, suite: str = SUITE) -> list[str]:
    return [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["/bin/bash"]',
        f'LABEL org.opencontainers.image.title="{spec.purpose}"',
        f'LABEL org.opencontainers.image.base.name="debian:{suite}"',
        'LABEL org.opencontainers.image.description="Debian minbase from Debian packages '
        '(mmdebstrap), for walbctr build"',
        f'LABEL io.walbctr.version="{__version__}"',
        f'LABEL io.walbctr.packages="{" ".join(spec.packages)}"',
    ]
