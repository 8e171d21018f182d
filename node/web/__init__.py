"""The node over HTTP: a web console for people, DICOMweb for viewers and tools, /metrics for monitoring.

- ``access.py``    what every route needs: its context, access rules and the wrapper enforcing them, sign-in, CSRF
- ``app.py``       the Starlette application: the route tables, session cookie, security headers (``create_app``)
- ``accounts.py``  accounts (Argon2id hashes, roles viewer / operator) and the audit log
- ``pages.py``     the console's pages (Jinja2, server-rendered): dashboard, studies and completeness,
                   visits (QC mosaics, measurements, results), jobs and outbox with retry, unknown
                   patients, reports, settings, audit
- ``dicomweb.py``  PS3.18 QIDO-RS, WADO-RS and STOW-RS on the same index, store and ingest path as DIMSE
- ``monitoring.py`` Prometheus metrics (prometheus-client) and the health check
- ``server.py``    uvicorn in a thread of ``myonode serve``, or alone (``myonode web``)

Imports: web → work → dimse → intake (tests/node/test_layering.py); route modules import ``access``, never ``app``.
"""
