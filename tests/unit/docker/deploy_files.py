"""Read the deployment files as docker and compose would, for static tests (no Docker engine).

- `parse_dockerfile`: a Dockerfile's stages and instructions (continuations joined).
- `interpolate`: compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$$` substitution.
- `merge_compose`: compose's merge rules for override files (compose-spec "Merge").
- `dockerignore_excludes`: whether a .dockerignore keeps a path out of the build context.
- `settings_env_names`: the environment variables a pydantic-settings class reads.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKER_DIR = REPO_ROOT / "docker"
# Beside the checkout (here and in CI): the Compose Specification's JSON schema.
COMPOSE_SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "compose-spec.json"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    flags: dict[str, str]  # --from=archives -> {"from": "archives"}
    args: str  # the rest of the line, flags removed


@dataclass
class Stage:
    base: str  # with the global ARGs' defaults substituted: what a plain `docker build` uses
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    declared_base: str = ""  # FROM's argument as written (`${PYTHON_IMAGE}`)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The ENV this stage sets (`KEY=value` form only, which the project uses)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in re.findall(r'(\w+)=("[^"]*"|\S+)', instruction.args):
                values[pair[0]] = pair[1].strip('"')
        return values

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last CMD/ENTRYPOINT/HEALTHCHECK's JSON (exec) form, None when absent."""
        found = self.all(keyword)
        if not found:
            return None
        args = found[-1].args
        if keyword == "HEALTHCHECK":
            args = args.split("CMD", 1)[1]
        value = json.loads(args)
        assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
        return value


_FLAG = re.compile(r"--([\w-]+)(?:=(\S+))?\s+")


def global_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults ("" when none)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.upper().startswith("FROM "):
            break
        if line.upper().startswith("ARG "):
            name, _, default = line[4:].strip().partition("=")
            values[name] = default
    return values


def parse_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, in order. Comments and parser directives are dropped.

    ARGs before the first FROM are global: they may only be used in FROM lines, where their
    defaults are substituted into `Stage.base`.
    """
    defaults = global_args(path)
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip() + " "
        while match := _FLAG.match(rest):
            flags[match.group(1)] = match.group(2) or ""
            rest = rest[match.end() :]
        instruction = Instruction(keyword.upper(), flags, rest.strip())
        if instruction.keyword == "FROM":
            parts = instruction.args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            base = interpolate(parts[0], defaults)
            stages.append(Stage(base, name, declared_base=parts[0]))
        elif instruction.keyword == "ARG" and not stages:
            continue  # a global ARG (global_args)
        else:
            assert stages, f"{path}: {keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<plain>\w+))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Substitute compose variables in every string of `value`, as `docker compose` does.

    Raises:
        ValueError: a `${VAR:?message}` (or `?`) variable is unset (empty, for `:?`).
    """
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and not current)
        if op in ("-", ":-") and missing:
            return arg
        if op in ("?", ":?") and missing:
            raise ValueError(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_in(value: Any) -> set[str]:
    """The names of the compose variables that `value` refers to."""
    if isinstance(value, dict):
        return set().union(*(variables_in(item) for item in value.values()), set())
    if isinstance(value, list):
        return set().union(*(variables_in(item) for item in value), set())
    if not isinstance(value, str):
        return set()
    return {m.group("braced") or m.group("plain") for m in _VARIABLE.finditer(value)} - {None}


# compose-spec "Merge": these service attributes are replaced, not appended...
_REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
# ...and these sequences hold unique resources, merged by a key.
_UNIQUE_BY = {
    "volumes": ("target",),
    "secrets": ("target",),
    "configs": ("target",),
    "ports": ("host_ip", "target", "published", "protocol"),
}


def merge_compose(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """`override` merged onto `base` following the Compose Specification's merge rules.

    Mappings merge key by key; sequences append, except the replaced attributes above and
    the unique resources, where an entry replaces the base entry with the same key. Only the
    long (mapping) syntax of the unique resources is supported: the project uses no other.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_compose(base[key], value, (*path, key)) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        service_path = path[2:] if path[:1] == ("services",) else None
        if service_path in _REPLACED:
            return override
        if service_path is not None and len(service_path) == 1 and path[-1] in _UNIQUE_BY:
            fields = _UNIQUE_BY[path[-1]]

            def key(entry: dict[str, Any]) -> tuple[Any, ...]:
                return tuple(entry.get(f) for f in fields)

            by_key = {key(entry): entry for entry in base}
            for entry in override:
                by_key[key(entry)] = entry
            return list(by_key.values())
        return [*base, *override]
    return override


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignore_excludes(dockerignore: Path, path: str) -> bool:
    """Whether `.dockerignore` keeps `path` (relative, `/`-separated) out of the context.

    Docker's rules: the last pattern that matches the path or one of its parent directories
    decides; `!` re-includes.
    """
    candidates = []
    parts = path.strip("/").split("/")
    for n in range(1, len(parts) + 1):
        candidates.append("/".join(parts[:n]))
    excluded = False
    for raw in dockerignore.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    """The (upper-case) environment variables a pydantic-settings class reads."""
    prefix = settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias or info.alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {c.upper() for c in alias.choices if isinstance(c, str)}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """`NAME=value` lines of an env file; with `commented`, only the `# NAME=value` ones."""
    pattern = re.compile(r"#\s*([A-Z][A-Z0-9_]*)=(.*)" if commented else r"([A-Z][A-Z0-9_]*)=(.*)")
    values = {}
    for line in path.read_text().splitlines():
        if match := pattern.fullmatch(line.strip()):
            values[match.group(1)] = match.group(2).strip()
    return values
