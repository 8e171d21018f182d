"""Quantification: geometry, stitching, registration, atlas, ROI statistics, DICOM result writers."""
