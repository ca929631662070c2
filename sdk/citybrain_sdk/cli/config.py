"""The developer CLI's configuration file: named profiles of a platform URL and a credential.

The file is ``$CITYBRAIN_DEV_CONFIG`` if set, else ``$XDG_CONFIG_HOME/citybrain/config.toml``
(``~/.config/citybrain/config.toml``). It holds secrets, so it is written with mode 0600 in a
folder of mode 0700, through a temporary file renamed into place: a reader never sees half of
it, and its mode is 0600 from its first byte. It is TOML::

    [profiles.default]
    url = "http://127.0.0.1:8000"
    api_key = "cbk_…"

Settings resolve flag > environment (``CITYBRAIN_DEV_URL``, ``CITYBRAIN_DEV_API_KEY``,
``CITYBRAIN_DEV_TOKEN``, ``CITYBRAIN_DEV_PROFILE``) > profile > the default URL.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_URL",
    "Profile",
    "config_path",
    "load_profiles",
    "remove_profile",
    "resolve",
    "save_profile",
]

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_ENV = "CITYBRAIN_DEV_CONFIG"
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELDS = ("url", "api_key", "token")


@dataclass(frozen=True, slots=True)
class Profile:
    """Where to connect and with what.

    Attributes:
        name: The profile's name (``default`` unless chosen).
        url: The platform's base URL.
        api_key: An API key, or None.
        token: An OIDC access token, or None.
    """

    name: str
    url: str
    api_key: str | None = None
    token: str | None = None


def config_path() -> Path:
    """The configuration file's path (it need not exist).

    Example:
        >>> config_path()
        PosixPath('/home/dev/.config/citybrain/config.toml')
    """
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "citybrain" / "config.toml"


def load_profiles(path: Path | None = None) -> dict[str, dict[str, str]]:
    """Every profile in the file (an empty dict when there is no file).

    Raises:
        ValueError: The file is not valid TOML.

    Example:
        >>> load_profiles()["default"]["url"]
        'http://127.0.0.1:8000'
    """
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    profiles = doc.get("profiles", {})
    return {
        str(name): {k: str(v) for k, v in fields.items() if k in _FIELDS}
        for name, fields in profiles.items()
        if isinstance(fields, dict)
    }


def _render(profiles: dict[str, dict[str, str]]) -> str:
    lines = ["# citybrain-dev configuration: written by `citybrain-dev login`; keep it private."]
    for name in sorted(profiles):
        lines.append("")
        lines.append(f"[profiles.{name}]")
        for key in _FIELDS:
            value = profiles[name].get(key)
            if value:
                # A JSON string is a valid TOML basic string (same escapes).
                lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Store a profile (replacing one of the same name), with mode 0600.

    Raises:
        ValueError: A profile name other than letters, digits, ``-`` and ``_``.

    Example:
        >>> save_profile(Profile("default", "http://127.0.0.1:8000", api_key=KEY))
        PosixPath('/home/dev/.config/citybrain/config.toml')
    """
    if not _PROFILE_NAME.match(profile.name):
        raise ValueError("a profile name is 1-64 letters, digits, '-' or '_'")
    path = path or config_path()
    profiles = load_profiles(path)
    fields: dict[str, Any] = {"url": profile.url}
    if profile.api_key:
        fields["api_key"] = profile.api_key
    if profile.token:
        fields["token"] = profile.token
    profiles[profile.name] = fields
    _write_private(path, _render(profiles))
    return path


def remove_profile(name: str, path: Path | None = None) -> bool:
    """Forget a profile; True if there was one.

    Example:
        >>> remove_profile("staging")
        True
    """
    path = path or config_path()
    profiles = load_profiles(path)
    if profiles.pop(name, None) is None:
        return False
    _write_private(path, _render(profiles))
    return True


def resolve(
    *,
    profile: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    token: str | None = None,
) -> Profile:
    """The settings to use: flags over environment over the profile over the defaults.

    Example:
        >>> resolve(url="http://10.0.0.5:8000").url
        'http://10.0.0.5:8000'
    """
    name = profile or os.environ.get("CITYBRAIN_DEV_PROFILE") or "default"
    stored = load_profiles().get(name, {})
    url = url or os.environ.get("CITYBRAIN_DEV_URL") or stored.get("url") or DEFAULT_URL
    # The first credential found wins, of either kind: a flag, then the environment, then the
    # profile (a client takes a key or a token, never both).
    for kind, value in (
        ("api_key", api_key),
        ("token", token),
        ("api_key", os.environ.get("CITYBRAIN_DEV_API_KEY")),
        ("token", os.environ.get("CITYBRAIN_DEV_TOKEN")),
        ("api_key", stored.get("api_key")),
        ("token", stored.get("token")),
    ):
        if value:
            return Profile(name, url, **{kind: value})
    return Profile(name, url)
