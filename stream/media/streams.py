"""Which streams a run has: `--source` (repeatable) or `--sources FILE`, each with a unique name.

The name is used in output paths (`{stream}` in `--output` and `--predictions`), the dashboard, the
predictions log and the report. Given in the sources file, or made from the URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stream.errors import Invalid, UserError
from stream.media.sources import is_camera_index, uri_with_transport
from stream.redact import mask_uri, remember, secrets_in

PLACEHOLDER = "{stream}"
SOURCE_KEYS = {"uri", "name", "target_fps", "transport"}
# A name becomes part of output paths ({stream}): one path component of safe characters, never `.` or `..`.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NAME_RULE = "use 1 to 64 letters, digits, '_', '-' or '.' (not '.' or '..')"


def check_name(name: object, where: str) -> str:
    """A stream name given by the user, or a one-line error saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise Invalid(f"{where}: stream name {name!r}: {NAME_RULE}")
    return name


@dataclass(frozen=True)
class StreamSpec:
    uri: str
    name: str
    target_fps: float | None = None  # None: the run's --target-fps, else the source's own fps


def name_from_uri(uri: str) -> str:
    if is_camera_index(uri):
        return f"camera{uri}"
    if "://" in uri:
        masked = mask_uri(uri)  # a path may carry credentials (`/user=admin&password=pw`)
        try:
            parts = urlsplit(masked)
            text = (parts.hostname or "") + (f"-{parts.port}" if parts.port else "") + parts.path
        except ValueError:  # a port that is no number, a stray bracket: the URI will not open, but it has a name
            text = masked.partition("://")[2].rpartition("@")[2]
    else:
        text = Path(uri).stem or Path(uri).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:48].strip("-.") or "stream"


def with_unique_names(specs: list[StreamSpec]) -> list[StreamSpec]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        count = seen.get(spec.name, 0) + 1
        seen[spec.name] = count
        out.append(spec if count == 1 else StreamSpec(spec.uri, f"{spec.name}-{count}", spec.target_fps))
    if len({s.name for s in out}) != len(out):  # a given name that equals a made-up "-2"
        raise UserError("stream names must be unique; give each stream its own name in the sources file")
    return out


def load_sources_file(path: str, allow_empty: bool = False) -> list[StreamSpec]:
    """A TOML file of `[[source]]` tables: `uri` (required), `name`, `target_fps`, `transport` (an RTSP
    camera's: tcp or udp; kept in the URI as `?transport=`, as given on the command line). `allow_empty`: a
    service's file may hold none (every camera was removed)."""
    from stream.config import read_toml

    data = read_toml(path, "--sources")
    if allow_empty and not data:
        return []
    entries = data.get("source")
    if not isinstance(entries, list) or not entries or set(data) != {"source"}:
        raise UserError(f"--sources {path}: expected one or more [[source]] tables with a uri each")
    specs = []
    for i, entry in enumerate(entries, 1):
        unknown = sorted(set(entry) - SOURCE_KEYS)
        if unknown:
            raise UserError(f"--sources {path}: source {i} has unknown key(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(SOURCE_KEYS))}")
        uri, name, fps = entry.get("uri"), entry.get("name"), entry.get("target_fps")
        if not isinstance(uri, str) or not uri:
            raise UserError(f"--sources {path}: source {i} needs a uri (a string)")
        if name is not None:
            check_name(name, f"--sources {path}: source {i}")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000):
            raise UserError(f"--sources {path}: source {i} target_fps {fps!r}: use a frame rate above 0")
        if "transport" in entry:
            uri = uri_with_transport(uri, entry["transport"], f"--sources {path}: source {i}")
        specs.append(StreamSpec(uri, name or name_from_uri(uri), float(fps) if fps is not None else None))
    return specs


def sources_toml(specs: list[StreamSpec]) -> str:
    """A sources file holding these streams, names included: `load_sources_file` reads the same specs back."""
    lines = ["# The streams of a service run with --persist: rewritten whole each time a stream is added or removed.",
             "# Comments and layout are not kept.", ""]
    for spec in specs:
        lines += ["[[source]]", f"uri = {_toml_string(spec.uri)}", f"name = {_toml_string(spec.name)}"]
        if spec.target_fps is not None:
            lines.append(f"target_fps = {spec.target_fps!r}")
        lines.append("")
    return "\n".join(lines)


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but for DEL, which TOML wants escaped too."""
    import json

    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def stream_specs(sources: list[str], sources_file: str | None, allow_empty: bool = False) -> list[StreamSpec]:
    specs = [StreamSpec(uri, name_from_uri(uri)) for uri in sources]
    if sources_file:
        specs += load_sources_file(sources_file, allow_empty)
    for spec in specs:  # from here on no error line, log record or report can show them
        for secret in secrets_in(spec.uri):
            remember(secret)
    return with_unique_names(specs)


def output_path(template: str | None, name: str, streams: int, flag: str) -> str | None:
    """`--output out/{stream}.mp4` → one path per stream. Several streams cannot share one video."""
    if template is None:
        return None
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, name)
    if streams > 1 and flag == "--output":
        raise UserError(f"--output {template}: {streams} streams cannot share one video; put {PLACEHOLDER} in "
                        f"the path, e.g. out/{PLACEHOLDER}.mp4")
    return template
