"""What a NotebookRun hands its kernel before the first cell: files beside the notebook, and env.

Files come from ConfigMaps, Secrets and the run's own namespace's results repository, each placed below
a destination relative to the run's working directory (a fresh directory per run). Env values are given
in the spec or read at run start from a Secret or ConfigMap key, and are set in the kernel only.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from nbkube.api.common import ApiModel
from nbkube.api.pod import CONFIG_KEY, DNS_SUBDOMAIN, ENV_NAME_PATTERN

MAX_INPUT_FILES = 10_000
"""Files placed in one run's working directory, all sources together."""
MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Bytes of one run's input files and env values together (what is sent to its kernel)."""
MAX_FILE_SOURCES = 16
MAX_ITEMS = 512
MAX_ENV = 128
MAX_PATH_CHARS = 512

# CEL: relative, and no `..` component (Kubernetes' structural schemas use RE2: no look-ahead, hence a rule).
_ESCAPES = "(^|/)[.][.](/|$)"


def _relative_rule(field: str, what: str) -> dict[str, Any]:
    return {
        "rule": f"!has(self.{field}) || "
        f"(!self.{field}.startsWith('/') && !self.{field}.matches('{_ESCAPES}'))",
        "message": f"{what} must be a relative path without '..' components",
        "fieldPath": f".{field}",
    }


def check_relative_path(value: str) -> str:
    """A path that stays below the directory it is relative to: not absolute, no `..` component, no NUL."""
    if value.startswith("/") or "\x00" in value or ".." in value.split("/"):
        raise ValueError("must be a relative path without '..' components")
    return value


RelativePath = Annotated[str, AfterValidator(check_relative_path)]


class InputItem(ApiModel):
    """One key of a ConfigMap or Secret, and the file it becomes."""

    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY)
    path: RelativePath | None = Field(
        None,
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="File the key's value is written to, relative to the destination (default: the key).",
    )

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [_relative_rule("path", "path")]


class ObjectFiles(ApiModel):
    """Keys of a ConfigMap or Secret of the run's namespace, as files (binaryData included)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    items: list[InputItem] | None = Field(
        None, max_length=MAX_ITEMS, description="The keys to place and where; every key when absent."
    )


class InputFiles(ApiModel):
    """Files placed in the run's working directory before its first cell: exactly one of configMap,
    secret or repoPath."""

    config_map: ObjectFiles | None = None
    secret: ObjectFiles | None = None
    repo_path: RelativePath | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="A file or folder of the run's own namespace's results repository "
        "(`<namespace>/...`, as status.result.path); a folder's whole content is placed.",
    )
    destination: RelativePath = Field(
        ".",
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Folder, relative to the working directory, the files go in.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> InputFiles:
        if sum(x is not None for x in (self.config_map, self.secret, self.repo_path)) != 1:
            raise ValueError("exactly one of configMap, secret, repoPath is required")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "[has(self.configMap), has(self.secret), has(self.repoPath)]"
                ".filter(x, x).size() == 1",
                "message": "exactly one of configMap, secret, repoPath is required",
            },
            _relative_rule("destination", "destination"),
            _relative_rule("repoPath", "repoPath"),
        ]

    def source(self) -> str:
        """How users name this source in messages: `ConfigMap x`, `Secret y`, `repository path z`."""
        if self.config_map is not None:
            return f"ConfigMap {self.config_map.name}"
        if self.secret is not None:
            return f"Secret {self.secret.name}"
        return f"repository path {self.repo_path}"


class RunKeySelector(ApiModel):
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY)
    optional: bool = Field(False, description="A missing object or key leaves the variable unset.")


class RunEnvVarSource(ApiModel):
    """Where a variable's value is read at run start: exactly one of secretKeyRef or configMapKeyRef."""

    secret_key_ref: RunKeySelector | None = None
    config_map_key_ref: RunKeySelector | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RunEnvVarSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("exactly one of secretKeyRef, configMapKeyRef is required")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                "message": "exactly one of secretKeyRef, configMapKeyRef is required",
            }
        ]


class RunEnvVar(ApiModel):
    """An environment variable set in the run's kernel only (not in the gateway pod)."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(None, max_length=32768)
    value_from: RunEnvVarSource | None = None

    @model_validator(mode="after")
    def _value_or_reference(self) -> RunEnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are mutually exclusive")
        return self

    @classmethod
    def crd_validations(cls) -> list[dict[str, Any]]:
        return [
            {
                "rule": "!(has(self.value) && has(self.valueFrom))",
                "message": "value and valueFrom are mutually exclusive",
            }
        ]


def check_unique_env(env: list[RunEnvVar]) -> None:
    names = [e.name for e in env]
    if len(set(names)) != len(names):
        raise ValueError("env names must be unique")


ENV_UNIQUE_RULE = {
    "rule": "self.env.all(e, self.env.exists_one(f, f.name == e.name))",
    "message": "env names must be unique",
    "fieldPath": ".env",
}
