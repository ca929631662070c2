"""CityBrain Open Platform: the service (catalog, tenants, access, gateway, API, CLI)."""

__version__ = "0.1.0"
