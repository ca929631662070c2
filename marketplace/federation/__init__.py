"""District hub federation (区县中枢): a hub is a platform instance of its own that mirrors the
city's catalog and contributes its own products back.

- ``feed`` (city side): what the city shows a hub's tenant, changed since a time, plus every
  handle it may see (so a harvest notices withdrawals). Never secret listings.
- ``harvest`` (hub side): the feed applied as read-only mirror listings with their ``origin``;
  incremental, idempotent, withdrawals and deprecations included. The diff is a pure function.
- ``signing``: the signed caller header a hub adds when it forwards a user's call.
- ``forward`` (hub side): infer and query calls on mirrored products, forwarded to the city with
  the hub key; (city side) the check that names the original caller in the audit log.
- ``push`` (hub side): the hub's own listings published to the city under the hub's tenant.
- ``client``: the city's HTTP API as the hub uses it (httpx).
"""
