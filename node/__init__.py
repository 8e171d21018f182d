"""myonode's DICOM service: SCP/SCU, association policy, exam completeness, jobs, CLI, settings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("myonode")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
