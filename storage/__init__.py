"""myonode's store: SQLAlchemy models, Alembic migrations, the DICOM file store. Imports nothing of ours."""
