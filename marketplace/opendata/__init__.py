"""The catalog in the open-data world's formats: DCAT-AP 3 (``dcat``) and CKAN's Action API
(``ckan``), both read from ``records`` — the listings a caller may see, exactly as the
catalog's own reads decide (``catalog.policy``). No web framework here: ``api/routes/dcat.py``
and ``api/routes/ckan.py`` put them on HTTP."""
