"""myonode's DICOM service, in rooms.

- ``dimse/``   the network: listener and association policy, module-level ``handle_*``
  functions (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, storage commitment), Q/R matching,
  SCU, conformance (SOP classes, transfer syntaxes), transcoding, named status codes;
- ``intake/``  what arrives: the receiver and its journal, the indexer, ingest (file + index
  row), classification, visits, completeness (the pure decision), status, ingest metrics;
- ``work/``    background work: the exam watcher (queues a visit when it is complete), jobs,
  processing, atlases, outbox (forwarding), reports;
- ``web/``     the web console, DICOMweb (QIDO-RS, WADO-RS, STOW-RS), /metrics, accounts, audit;
- ``cli/``     the ``myonode`` command line; ``demo/`` the demo and its Orthanc and ports;
- ``settings.py`` (the configuration) and ``service.py`` (``myonode serve``).

Imports run one way: cli → service → web → work → dimse → intake → settings. The one exception
is ``node.dimse.status`` (and ``node.dimse.conformance``, read by settings to check
``[node] accept``): leaves that import nothing of ours and that every room may read.
``tests/node/test_layering.py`` checks the rule.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("myonode")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
