"""Test helpers shared across the test packages (imported as ``tests.support.…``; fixtures stay in conftest.py).

- :mod:`tests.support.dicom_factory`: small MR images and series written with pydicom.
- :mod:`tests.support.series_factory`: stored series as the pipeline's volume reader sees them.
- :mod:`tests.support.load_db`: a simulated cohort put into the database.
- :mod:`tests.support.index_builder`: an index of many visits built through the models (scale tests).
- :mod:`tests.support.dcmtk`: run dcmtk tools (the real peers) and the AE titles the test nodes allow.
- :mod:`tests.support.dcm2niix`: dcm2niix as the reference reader of vendor headers.
- :mod:`tests.support.real_data`: real scans fetched from the package registries (hash-checked, cached).
- :mod:`tests.support.sr`: a TID 1500 report's measurement groups by tracking identifier.
- :mod:`tests.support.serve`, :mod:`tests.support.console`, :mod:`tests.support.browser`: a ``myonode serve``
  process, signing in to its console, and Chromium driving it.
"""
