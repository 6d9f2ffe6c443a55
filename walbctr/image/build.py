"""`walbctr build` and `walbctr base`: the walb-tools image, with or without a registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from docker.errors import APIError, BuildError, DockerException

from walbctr import __version__
from walbctr.display import BuildDisplay, ProgressMode
from walbctr.docker.engine import Engine
from walbctr.errors import WalbctrError, explain, warn
from walbctr.image.buildlog import BuildLog
from walbctr.image.debian_base import BaseSpec, base_specs, import_changes, mmdebstrap_args
from walbctr.image.recipe import recipe_dir
from walbctr.image.source import SourceTree, copy_tree, describe, resolve
from walbctr.layout.imagetag import image_tag, keeper_image

STOCK_BASE = "debian:bookworm-slim"
# What the keeper image holds of walbctr: the keeper package and the walb protocol package it
# uses, whole (test_architecture checks that keeper/ imports nothing else).
KEEPER_PACKAGES = ("keeper", "walb")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class Built:
    tag: str
    image_id: str
    size: int
    seconds: float
    source: SourceTree
    keeper_tag: str = ""


def labels_for(src: SourceTree, base: str, target: str) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": "walb-tools",
        "org.opencontainers.image.description":
            "WalB servers and clients (walb-storage, walb-proxy, walb-archive, walbc, wdevc) "
            "for walbctr",
        "org.opencontainers.image.source": src.url,
        "org.opencontainers.image.revision": src.revision,
        "org.opencontainers.image.version": src.version,
        "org.opencontainers.image.created": src.created,
        "org.opencontainers.image.licenses": "GPL-2.0-only OR GPL-3.0-only",
        "org.opencontainers.image.base.name": base,
        "io.walbctr.version": __version__,
        "io.walbctr.make-target": target,
    }
    if "double" in src.version:
        labels["io.walbctr.test-double"] = "true"
    return labels


# --- base images --------------------------------------------------------------------------


def create_base(engine: Engine, spec: BaseSpec, echo: Echo, plain: bool) -> None:
    """Make `spec` from Debian packages: mmdebstrap into a tarball, docker import it."""
    if shutil.which("mmdebstrap") is None:
        raise WalbctrError(
            f"cannot create {spec.tag}: mmdebstrap is not installed",
            "apt-get install mmdebstrap (it needs only Debian's package archive), or load "
            "a base made elsewhere with 'docker load' and pass --base-image",
        )
    started = time.monotonic()
    echo(f"creating {spec.tag} from Debian packages with mmdebstrap "
         f"({len(spec.packages)} extra packages; once per engine, under a minute)")
    with tempfile.TemporaryDirectory(prefix="walbctr-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        cmd = mmdebstrap_args(spec, tarball)
        tail: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                tail = [*tail[-19:], line.rstrip()]
                if plain:
                    echo(f"  mmdebstrap: {line.rstrip()}")
        if proc.returncode != 0:
            raise WalbctrError(
                f"mmdebstrap failed (exit {proc.returncode}) creating {spec.tag}:\n  "
                + "\n  ".join(tail),
                "check that apt can reach a Debian mirror from this machine",
            )
        repository, tag = spec.tag.rsplit(":", 1)
        try:
            engine.api.api.import_image(src=str(tarball), repository=repository, tag=tag,
                                        changes=import_changes(spec))
        except DockerException as err:
            raise WalbctrError(f"importing {spec.tag} into the engine failed: "
                               f"{explain(err)}") from None
    echo(f"created {spec.tag} in {time.monotonic() - started:.0f} s")


def ensure_bases(engine: Engine, dockerfile: str, echo: Echo, plain: bool,
                 force: bool = False) -> tuple[str, str]:
    """(runtime base, build base) made locally, creating those that are missing."""
    specs = base_specs(dockerfile)
    for spec in specs:
        if force or engine.image_or_none(spec.tag) is None:
            create_base(engine, spec, echo, plain)
        else:
            echo(f"{spec.tag} is present")
    return specs[0].tag, specs[1].tag


def choose_bases(engine: Engine, base_image: str | None, dockerfile: str, echo: Echo,
                 plain: bool, pull: bool) -> tuple[str, str]:
    """The bases for the runtime and builder stages.

    An explicit --base-image is used as it is for both stages. Otherwise the stock Debian
    image when it is present or can be pulled, and else walbctr's own bases, made from
    Debian packages when missing.
    """
    if base_image is not None:
        if engine.image_or_none(base_image) is None and not (pull and _pull(engine, base_image)):
            raise WalbctrError(f"base image {base_image} is not on this engine and cannot be "
                               "pulled", "load it with 'docker load', or leave --base-image "
                               "out to use bases made from Debian packages ('walbctr base')")
        return base_image, base_image
    if engine.image_or_none(STOCK_BASE) is not None:
        return STOCK_BASE, STOCK_BASE
    runtime, builder = (s.tag for s in base_specs(dockerfile))
    if engine.image_or_none(runtime) and engine.image_or_none(builder):
        return runtime, builder
    if pull and _pull(engine, STOCK_BASE):
        return STOCK_BASE, STOCK_BASE
    echo(f"{STOCK_BASE} is not on this engine and cannot be pulled (no registry); using "
         "bases made from Debian packages instead")
    return ensure_bases(engine, dockerfile, echo, plain)


def _pull(engine: Engine, ref: str) -> bool:
    try:
        engine.api.images.pull(ref)
    except DockerException:
        return False
    return True


# --- the build ----------------------------------------------------------------------------


def build(
    *,
    source: str | None,
    ref: str | None,
    base_image: str | None,
    target: str,
    extra_tags: Iterable[str],
    no_cache: bool,
    pull: bool,
    progress: ProgressMode,
    echo: Echo,
) -> Built:
    engine = Engine()
    engine.api  # noqa: B018 (fail early and clearly when the engine is unreachable)
    recipe = recipe_dir()
    dockerfile = (recipe / "Dockerfile").read_text()
    plain = progress != "live"
    started = time.monotonic()
    tree, url = resolve(source, ref)
    runtime_base, builder_base = choose_bases(engine, base_image, dockerfile, echo, plain, pull)
    with tempfile.TemporaryDirectory(prefix="walbctr-build-") as tmp:
        context = Path(tmp)
        for name in ("Dockerfile", "lvm.conf", "walb-entrypoint.c"):
            shutil.copy2(recipe / name, context / name)
        content_hash, newest = copy_tree(tree, context / "source")
        src = describe(tree, content_hash, newest, url)
        tag = image_tag(src.version, src.revision)
        echo(f"building {tag} from {src.url} ({src.revision[:12]}, walb-tools {src.version}) "
             f"on {runtime_base}")
        args = {"BASE_IMAGE": runtime_base, "BUILDER_IMAGE": builder_base,
                "MAKE_TARGET": target}
        log = BuildLog()
        lines = _run_build(engine, context, [tag, *extra_tags], args,
                           labels_for(src, runtime_base, target), no_cache, log)
        _show(lines, log, progress, echo)
        if log.failed is not None or engine.image_or_none(tag) is None:
            raise _build_error(log)
        try:
            keeper = _build_keeper(engine, context, tag, args,
                                   labels_for(src, runtime_base, target), no_cache, progress,
                                   echo)
        except WalbctrError as err:
            # The keeper stage installs Debian's python3 when the base lacks it; a site with
            # no package mirror still gets its walb-tools image, which most layouts need.
            warn(f"warning: the keeper image was not built, so layouts with a monitor block "
                 f"cannot start their keeper here: {err.message.splitlines()[0]} (run "
                 "'walbctr build' where Debian's packages can be reached, or see --plain)")
            keeper = ""
    image = engine.api.images.get(tag)
    return Built(tag, image.id, int(image.attrs.get("Size", 0)), time.monotonic() - started,
                 src, keeper)


def _build_keeper(engine: Engine, context: Path, server_tag: str, args: dict[str, str],
                  labels: dict[str, str], no_cache: bool, progress: ProgressMode,
                  echo: Echo) -> str:
    """The keeper image: the `keeper` target, on the server image's layers (all cached)."""
    package = Path(__file__).resolve().parent.parent
    (context / "keeper").mkdir()
    shutil.copy2(package / "__init__.py", context / "keeper" / "__init__.py")
    for name in KEEPER_PACKAGES:
        shutil.copytree(package / name, context / "keeper" / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tag = keeper_image(server_tag)
    labels = {**labels, "org.opencontainers.image.title": "walb-keeper",
              "org.opencontainers.image.description":
                  "walbctr's keeper: walb group metrics and recovery kicks"}
    labels.pop("io.walbctr.make-target", None)
    echo(f"building {tag} (the keeper) on {server_tag}'s runtime")
    log = BuildLog()
    _show(_run_build(engine, context, [tag], args, labels, no_cache, log, stage="keeper"),
          log, progress, echo)
    if log.failed is not None or engine.image_or_none(tag) is None:
        raise _build_error(log)
    return tag


def _run_build(engine: Engine, context: Path, tags: list[str], args: dict[str, str],
               labels: dict[str, str], no_cache: bool, log: BuildLog,
               stage: str = "runtime") -> Iterable[str]:
    """Lines of build output; BuildKit through buildx when present, else the classic API.

    WALBCTR_BUILDER=classic forces the classic builder (for a broken buildx).
    """
    if os.environ.get("WALBCTR_BUILDER") != "classic" and engine.has_cli_plugin("buildx"):
        # python-on-whales costs 0.35 s to import; `up` imports this module too (to
        # offer a build), and only a BuildKit build needs it.
        from python_on_whales.exceptions import DockerException as CliError  # noqa: PLC0415

        def buildkit() -> Iterable[str]:
            try:
                stream = engine.cli.buildx.build(
                    context, tags=tags, build_args=args, labels=labels, cache=not no_cache,
                    target=stage,
                    load=True, progress="plain", stream_logs=True)
                yield from cast(Iterator[str], stream)
            except CliError as err:
                yield from (err.stderr or "").splitlines()

        return buildkit()

    def classic() -> Iterable[str]:
        try:
            for chunk in engine.api.api.build(path=str(context), tag=tags[0], buildargs=args,
                                              labels=labels, nocache=no_cache, rm=True,
                                              target=stage,
                                              decode=True):
                if "stream" in chunk:
                    yield from chunk["stream"].splitlines()
                if "error" in chunk:
                    log.fail(chunk["error"].strip())
                    yield chunk["error"].strip()
            for extra in tags[1:]:
                engine.api.images.get(tags[0]).tag(extra)
        except (APIError, BuildError) as err:
            log.fail(str(err))

    return classic()


def _show(lines: Iterable[str], log: BuildLog, progress: ProgressMode, echo: Echo) -> None:
    if progress == "live":
        with BuildDisplay(log) as display:
            for line in lines:
                display.update(log.feed(line))
        return
    for line in lines:
        log.feed(line)
        if progress == "plain" and line.strip():
            echo(line.rstrip())


def _build_error(log: BuildLog) -> WalbctrError:
    step = log.failed
    if step is None:
        tail = "\n  ".join(log.other) or "(no output)"
        return WalbctrError(f"the build failed:\n  {tail}")
    tail = "\n  ".join(step.tail) or "(no output)"
    return WalbctrError(
        f"the build failed at step {step.name}\n  {step.error}\n  last lines of its output:\n"
        f"  {tail}",
        "if the step is make, check that the tree builds natively with 'make core "
        "DISABLE_COMMIT_ID=1'; rerun with --plain for the whole log",
    )


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


