"""Settings read once from the environment (`SKINSERVE_*`) and passed down as an object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    storage_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SKINSERVE_DATA_DIR", "data")).expanduser().resolve()
        return cls(
            data_dir=data_dir,
            database_url=env.get("SKINSERVE_DATABASE_URL") or f"sqlite:///{data_dir / 'skinserve.db'}",
            storage_url=env.get("SKINSERVE_STORAGE_URL") or str(data_dir / "images"),
        )


def redacted_url(url: str) -> str:
    """A database URL safe to print: the password, if any, is masked."""
    return make_url(url).render_as_string(hide_password=True)
