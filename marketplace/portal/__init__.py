"""The web portal's parts that know no web framework.

The portal at ``/`` is server-rendered by the platform's own app: its routes live in
``marketplace.api.routes.portal`` (the only layer that imports FastAPI), its pages in
``templates/`` (Jinja2) and its one stylesheet in ``static/``. What the pages show comes from
the domain services (catalog, access, keys, billing, audit) exactly as the JSON API's does;
this package holds only what is the portal's own:

* :mod:`.i18n` — the message catalogs (English, Simplified Chinese) and language choice;
* :mod:`.sessions` — server-side sessions behind a signed cookie, with a CSRF token each;
* :mod:`.signin` — OIDC authorization-code sign-in with PKCE against the Keycloak realm;
* :mod:`.charts` — usage charts drawn as SVG on the server;
* :mod:`.documents` — invoices and statements as PDF;
* :mod:`.tryit` — example requests for the "try it" forms.
"""

from __future__ import annotations

from pathlib import Path

PORTAL_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PORTAL_DIR / "templates"
STATIC_DIR = PORTAL_DIR / "static"
MESSAGES_DIR = PORTAL_DIR / "messages"
