"""The strings a layout may hold: which characters each kind of value takes, and why.

Every string of a layout ends up in an argv, a compose file, a label, a file name or a
walblib script. None needs shell or Compose syntax, so each kind is limited to what real
deployments use, and a refusal names the first character that is not allowed and what is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

PLACEHOLDERS = ("id", "host", "role", "group")

# What a rule finds wrong with a value: (message, fix), or None when it is fine.
Finding = tuple[str, str] | None

PATH_CHARS = "letters, digits, '/', '.', '_', '-' and '+'"
_PATH_CHAR = re.compile(r"[A-Za-z0-9/._+-]")
_PLACEHOLDER = re.compile(r"\{[a-z]+\}")
PLACEHOLDER_TEXT = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
PATH_TEMPLATE_PATTERN = r"^[A-Za-z0-9/._+{}-]+$"


def show(value: str, limit: int = 60) -> str:
    """A value as an error quotes it: its repr, cut short when long."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


def first_outside(value: str, allowed: re.Pattern[str]) -> str | None:
    """The first character of `value` outside `allowed`, a character class such as
    '[a-z0-9]', or None."""
    found = _negated(allowed.pattern).search(value)
    return found.group() if found else None


@functools.cache
def _negated(char_class: str) -> re.Pattern[str]:
    assert char_class.startswith("[") and char_class.endswith("]"), char_class
    return re.compile("[^" + char_class[1:])


def bad_char(value: str, ch: str, what: str) -> str:
    return f"{show(value)} has the character {ch!r}, which {what} may not hold"


# Linux's PATH_MAX and NAME_MAX (limits.h): longer paths cannot be opened or bound.
PATH_MAX = 4095
NAME_MAX = 255


def path_length(value: str) -> Finding:
    if len(value) > PATH_MAX:
        return (f"the path has {len(value)} characters; Linux takes at most {PATH_MAX}",
                "use a shorter path")
    longest = max(value.split("/"), key=len)
    if len(longest) > NAME_MAX:
        return (f"a part of the path has {len(longest)} characters; Linux takes at most "
                f"{NAME_MAX}", "use shorter names")
    return None


def path_template(value: str) -> Finding:
    """A base_dir or log_path as written: safe characters and {placeholders}."""
    ch = first_outside(_PLACEHOLDER.sub("", value), _PATH_CHAR)
    if ch is None:
        return path_length(value)
    if ch in "{}":
        return (bad_char(value, ch, "a path outside a placeholder"),
                f"braces only form the placeholders {PLACEHOLDER_TEXT}")
    return (bad_char(value, ch, "a path here"), f"use {PATH_CHARS}, and the placeholders "
            f"{PLACEHOLDER_TEXT}")


def log_path_template(value: str) -> Finding:
    return None if value == "-" else path_template(value)


def plain_path(value: str) -> Finding:
    """A path walbctr reads itself (TLS files): no placeholders."""
    ch = first_outside(value, _PATH_CHAR)
    if ch is None:
        return path_length(value)
    return bad_char(value, ch, "this path"), f"use {PATH_CHARS}"


def name(value: str, what: str, chars: str, allowed: re.Pattern[str], most: int) -> Finding:
    """A name of letters, digits, '-' and '_' (as `allowed` says), starting with a letter
    or digit, at most `most` characters."""
    fix = f"use {chars}, starting with a letter or digit, at most {most} characters"
    if not value:
        return f"{what} cannot be empty", fix
    ch = first_outside(value, allowed)
    if ch is not None:
        return bad_char(value, ch, what), fix
    if not value[0].isalnum():
        return f"{show(value)} starts with {value[0]!r}", fix
    if len(value) > most:
        return f"{show(value)} is longer than {most} characters", fix
    return None


# An id names a compose service, a container and (in bridge mode) a DNS name, and is passed
# to walb as -id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
_ID_CHAR = re.compile(r"[A-Za-z0-9_-]")


def server_id(value: str) -> Finding:
    return name(value, "a server id", "letters, digits, '-' and '_' (an id names a "
                "container and is walb's -id)", _ID_CHAR, 63)


# A group names compose projects, which take lower-case letters only.
GROUP_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
_GROUP_CHAR = re.compile(r"[a-z0-9_-]")


def group_name(value: str) -> Finding:
    return name(value, "a group name", "lower-case letters, digits, '-' and '_' (it names "
                "compose projects)", _GROUP_CHAR, 40)


# Host names are compose project names (after lower-casing) and placeholders in paths.
HOST_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_HOST_CHAR = re.compile(r"[A-Za-z0-9_.-]")


def host_name(value: str) -> Finding:
    return name(value, "a host name", "letters, digits, '.', '-' and '_'", _HOST_CHAR, 63)


# LVM's own name rules (lvm2 lib/misc/lvm-string.c: _validate_name and
# apply_lvname_restrictions; lvm(8) "VALID NAMES").
LVM_CHARS = "letters, digits, '.', '_', '-' and '+'"
_LVM_CHAR = re.compile(r"[A-Za-z0-9._+-]")
LVM_NAME_PATTERN = r"^(?!-)(?!\.{1,2}$)[A-Za-z0-9._+-]{1,127}$"
LV_RESERVED_PREFIXES = ("pvmove", "snapshot")
LV_RESERVED_PARTS = ("_cdata", "_cmeta", "_corig", "_mimage", "_mlog", "_pmspare", "_rimage",
                     "_rmeta", "_tdata", "_tmeta", "_vorigin")
_LVM_FIX = "see 'VALID NAMES' in lvm(8)"


def vg_name(value: str) -> Finding:
    if not value:
        return "an LVM name cannot be empty", "give the volume group's name"
    ch = first_outside(value, _LVM_CHAR)
    if ch is not None:
        return bad_char(value, ch, "an LVM name"), f"LVM names use {LVM_CHARS}"
    if value.startswith("-"):
        return f"{show(value)} starts with '-', which LVM refuses", _LVM_FIX
    if value in (".", ".."):
        return f"{show(value)} is not a valid LVM name", _LVM_FIX
    if len(value) > 127:
        return f"an LVM name has at most 127 characters, not {len(value)}", _LVM_FIX
    return None


def lv_name(value: str) -> Finding:
    found = vg_name(value)
    if found is not None:
        return found
    for prefix in LV_RESERVED_PREFIXES:
        if value.startswith(prefix):
            return (f"{show(value)} starts with {prefix!r}, which LVM reserves for its own "
                    "volumes", _LVM_FIX)
    for part in LV_RESERVED_PARTS:
        if part in value:
            return (f"{show(value)} contains {part!r}, which LVM reserves for its own "
                    "volumes", _LVM_FIX)
    return None


# Compression for full and hash sync: TYPE:LEVEL:CPU as walb-tools v1.0.19 parses it
# (src/host_info.cpp:33-45): the types of src/compression_type.hpp:16-23, a level up to 9
# and a CPU count that is not 0 (CompressOpt::verify, src/host_info.cpp:16-31). Level and
# CPU count are stored in a uint8_t, so 256 would silently become 0.
COMPRESSION_TYPES = ("none", "snappy", "gzip", "lzma", "lz4", "zstd")
COMPRESS_PATTERN = r"^(none|snappy|gzip|lzma|lz4|zstd):[0-9]:[1-9][0-9]{0,2}$"
_COMPRESS_FIX = ("write TYPE:LEVEL:CPU, TYPE one of " + ", ".join(COMPRESSION_TYPES)
                 + ", LEVEL 0 to 9, CPU 1 to 255, e.g. 'snappy:0:1'")


def compress_opt(value: str) -> Finding:
    parts = value.split(":")
    if len(parts) != 3:
        return f"{show(value)} is not TYPE:LEVEL:CPU", _COMPRESS_FIX
    kind, level, cpu = parts
    if kind not in COMPRESSION_TYPES:
        return f"{show(kind)} is not a compression type walb knows", _COMPRESS_FIX
    if not re.fullmatch(r"[0-9]", level):
        return f"compression level {show(level)} is not 0 to 9", _COMPRESS_FIX
    if not re.fullmatch(r"[1-9][0-9]{0,2}", cpu) or int(cpu) > 255:
        return f"CPU count {show(cpu)} is not 1 to 255", _COMPRESS_FIX
    return None


def checked(check: Callable[[str], Finding]) -> AfterValidator:
    """A validator running `check`; its error carries the message and the fix, which
    layout._describe passes on as they are."""

    def run(value: str) -> str:
        found = check(value)
        if found is not None:
            raise PydanticCustomError("walbctr_value", "{message}",
                                      {"message": found[0], "fix": found[1]})
        return value

    return AfterValidator(run)


def pattern(regex: str) -> WithJsonSchema:
    """The rule as the JSON Schema tells editors (the check itself is `checked`)."""
    return WithJsonSchema({"type": "string", "pattern": regex})


VgName = Annotated[str, checked(vg_name), pattern(LVM_NAME_PATTERN)]
LvName = Annotated[str, checked(lv_name), pattern(LVM_NAME_PATTERN)]
CompressOpt = Annotated[str, checked(compress_opt), pattern(COMPRESS_PATTERN)]
PathTemplate = Annotated[str, checked(path_template), pattern(PATH_TEMPLATE_PATTERN)]
LogPathTemplate = Annotated[str, checked(log_path_template),
                            pattern(r"^(-|[A-Za-z0-9/._+{}-]+)$")]
PlainPath = Annotated[str, checked(plain_path), pattern(r"^[A-Za-z0-9/._+-]+$")]
ServerId = Annotated[str, checked(server_id), pattern(ID_PATTERN)]
GroupName = Annotated[str, checked(group_name), pattern(GROUP_PATTERN)]
HostName = Annotated[str, checked(host_name), pattern(HOST_NAME_PATTERN)]
