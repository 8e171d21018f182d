"""myonode's DICOM service, in rooms.

- ``dimse/``   the network: listener and association policy, module-level ``handle_*``
  functions (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, storage commitment), Q/R matching,
  SCU, conformance (SOP classes, transfer syntaxes), transcoding, named status codes;
- ``intake/``  what arrives: the receiver (the durable journal entry), the indexer, ingest (file +
  index rows), the index's fields, classification, visits, completeness (the pure decision), the
  overview of what arrived, ingest metrics;
- ``work/``    background work: the exam watcher (queues a visit when it is complete), jobs,
  processing, results (stored, recorded, forwarded), review and signing, corrections, the atlas in
  use, outbox (forwarding), reports;
- ``web/``     what every route needs (access), the console, DICOMweb (QIDO-RS, WADO-RS, STOW-RS),
  monitoring (/metrics, /healthz), accounts, audit;
- ``cli/``     the ``myonode`` command line; ``demo/`` the demo, its Orthanc and ports, and the default
  phantom atlas the commands that start a node fill in when ``[atlas] path`` is unset;
- ``settings.py`` (the configuration) and ``service.py`` (``myonode serve``).

Imports run one way: cli → service → web → work → dimse → intake → settings. The one exception
is ``node.dimse.status`` (and ``node.dimse.conformance``, read by settings to check
``[node] accept``): leaves that import nothing of ours and that every room may read. No module
imports itself back through others (not even inside a function), and the serving rooms never
import ``phantom/``. ``tests/node/test_layering.py`` checks these rules. A visit's state belongs to
:mod:`storage.visit_states`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("myonode")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
