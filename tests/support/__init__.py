"""Test helpers shared across the test packages (imported as ``tests.support.…``; fixtures stay in conftest.py).

- :mod:`tests.support.dicom_factory`: small MR images and series written with pydicom.
- :mod:`tests.support.series_factory`: stored series as the pipeline's volume reader sees them.
- :mod:`tests.support.load_db`: a simulated cohort put into the database.
- :mod:`tests.support.dcmtk`: run dcmtk tools (the real peers) and the AE titles the test nodes allow.
"""
