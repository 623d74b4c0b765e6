"""Settings read once from the environment (`SKINSERVE_*`, pydantic-settings) and passed down as objects."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from skinserve.errors import SkinserveError

ENV_PREFIX = "SKINSERVE_"


class SettingsError(SkinserveError, ValueError):
    """A `SKINSERVE_*` variable with a value that cannot be used; the message names the variable."""


class EnvSettings(BaseSettings):
    """Base of every settings class: `SKINSERVE_<FIELD>` variables, empty ones meaning "use the default"."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """From the process environment, or from `environ` alone; a bad value raises `invalid(...)` naming it."""
        prefix = cls.model_config.get("env_prefix") or ""
        try:
            if environ is None:
                return cls()
            # model_validate skips BaseSettings' sources: only `environ` is read, through the same validators.
            values = {k[len(prefix) :].lower(): v for k, v in environ.items() if k.startswith(prefix) and v.strip()}
            return cls.model_validate(values)
        except ValidationError as err:
            raise cls.invalid(describe_invalid(err, prefix)) from err

    @classmethod
    def invalid(cls, message: str) -> SkinserveError:
        """The error a bad value raises; a settings class of a subsystem may raise that subsystem's own."""
        return SettingsError(message)


def describe_invalid(err: ValidationError, prefix: str = ENV_PREFIX) -> str:
    """pydantic's errors in the words of the environment: `SKINSERVE_MODEL_COPIES='0': ...`."""
    problems = []
    for problem in err.errors():
        name = prefix + "_".join(str(part) for part in problem["loc"]).upper()
        value = problem.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        problems.append(f"{name}{shown}: {problem['msg']}")
    return "; ".join(problems)


class Settings(EnvSettings):
    """Where the embedded defaults live: a data folder holding the SQLite registry and the image store."""

    data_dir: Path = Path("data")
    database_url: str = ""  # default: sqlite:///<data_dir>/skinserve.db
    storage_url: str = ""  # default: <data_dir>/images

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Self:
        data_dir = self.data_dir.expanduser().resolve()
        defaults: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": self.database_url or f"sqlite:///{data_dir / 'skinserve.db'}",
            "storage_url": self.storage_url or str(data_dir / "images"),
        }
        for name, value in defaults.items():
            object.__setattr__(self, name, value)  # frozen: filled in once, while validating
        return self


def redacted_url(url: str) -> str:
    """A database URL safe to print: the password, if any, is masked."""
    return make_url(url).render_as_string(hide_password=True)
