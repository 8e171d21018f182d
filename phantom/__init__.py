"""The synthetic 3 T scanner: whole-body subjects, Philips-like DICOM, cohorts with known truth."""
