"""Fetching external datasets from Kaggle, where the `kaggle` package, credentials and network exist."""

from __future__ import annotations

import os
from pathlib import Path

from skinserve.data.sources import unpack_archive
from skinserve.errors import SkinserveError


class DownloadError(SkinserveError):
    pass


def kaggle_credentials_present(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return True
    config_dir = Path(env.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    return (config_dir / "kaggle.json").is_file()


def download_kaggle_dataset(slug: str, dest: Path) -> Path:
    """Download `owner/dataset` into `dest`, unpack it, and return the dataset root."""
    if "/" not in slug:
        raise DownloadError(f"expected a Kaggle dataset slug like 'owner/name', got {slug!r}")
    if not kaggle_credentials_present():
        raise DownloadError(
            "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle "
            "(https://www.kaggle.com/docs/api)"
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as err:
        raise DownloadError("the kaggle package is not installed: pip install 'skinserve[kaggle]'") from err
    api = KaggleApi()
    try:
        api.authenticate()
        dest.mkdir(parents=True, exist_ok=True)
        api.dataset_download_files(slug, path=str(dest), unzip=False, quiet=False)
    except Exception as err:  # the client raises bare exceptions for auth, HTTP and network failures alike
        raise DownloadError(f"Kaggle download of {slug!r} failed: {err}") from err
    archives = sorted(dest.glob("*.zip"))
    if not archives:
        raise DownloadError(f"Kaggle returned no archive for {slug!r} in {dest}")
    return unpack_archive(archives[0], dest / archives[0].stem)
