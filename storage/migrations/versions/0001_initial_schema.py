"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=128), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'done', 'failed', name='job_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_jobs_attempts_nonnegative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state_kind', ['state', 'kind'], unique=False)

    op.create_table('patients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.String(length=324), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('sex', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patients')),
    sa.UniqueConstraint('patient_id', 'issuer', name=op.f('uq_patients_patient_id_issuer'))
    )
    op.create_table('stats_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('running', 'done', 'failed', name='run_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('input_digest', sa.String(length=64), nullable=False),
    sa.Column('output_dir', sa.Text(), nullable=True),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stats_runs'))
    )
    op.create_table('subjects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_id', sa.String(length=64), nullable=False),
    sa.Column('group', sa.Enum('patient', 'control', name='subject_group', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('sex', sa.Enum('M', 'F', name='subject_sex', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('baseline_age', sa.Float(), nullable=True),
    sa.Column('onset_site', sa.Enum('bulbar', 'upper_limb', 'lower_limb', name='onset_site', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('onset_side', sa.Enum('left', 'right', 'none', name='onset_side', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('diagnosis', sa.Enum('ALS', 'PMA', name='diagnosis', native_enum=False, create_constraint=True), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('baseline_age IS NULL OR (baseline_age >= 0 AND baseline_age < 130)', name=op.f('ck_subjects_age_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subjects')),
    sa.UniqueConstraint('subject_id', name=op.f('uq_subjects_subject_id'))
    )
    op.create_table('subject_patient_ids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_fk', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['subject_fk'], ['subjects.id'], name=op.f('fk_subject_patient_ids_subject_fk_subjects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subject_patient_ids')),
    sa.UniqueConstraint('patient_id', 'issuer', name=op.f('uq_subject_patient_ids_patient_id_issuer'))
    )
    with op.batch_alter_table('subject_patient_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subject_patient_ids_subject_fk'), ['subject_fk'], unique=False)

    op.create_table('visits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subject_fk', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=32), nullable=False),
    sa.Column('visit_date', sa.Date(), nullable=True),
    sa.Column('state', sa.Enum('receiving', 'complete', 'queued', 'processing', 'processed', 'failed', name='visit_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('incomplete', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['subject_fk'], ['subjects.id'], name=op.f('fk_visits_subject_fk_subjects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_visits')),
    sa.UniqueConstraint('subject_fk', 'label', name=op.f('uq_visits_subject_fk_label'))
    )
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_visits_subject_fk'), ['subject_fk'], unique=False)

    op.create_table('measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=False),
    sa.Column('modality', sa.Enum('relT2', 'ADC', name='measurement_modality', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('muscle', sa.String(length=64), nullable=False),
    sa.Column('side', sa.Enum('left', 'right', 'none', name='measurement_side', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('mean_signal', sa.Float(), nullable=True),
    sa.Column('reference_value', sa.Float(), nullable=True),
    sa.Column('voxel_count', sa.Integer(), nullable=False),
    sa.Column('volume_ml', sa.Float(), nullable=True),
    sa.Column('stations', sa.JSON(), nullable=False),
    sa.Column('qc_flags', sa.JSON(), nullable=False),
    sa.Column('pipeline_version', sa.String(length=32), nullable=False),
    sa.Column('atlas_id', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('voxel_count >= 0', name=op.f('ck_measurements_voxels_nonnegative')),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_measurements_visit_fk_visits'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measurements')),
    sa.UniqueConstraint('visit_fk', 'modality', 'muscle', 'side', name=op.f('uq_measurements_visit_fk_modality_muscle_side'))
    )
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_measurements_visit_fk'), ['visit_fk'], unique=False)

    op.create_table('observations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=False),
    sa.Column('source', sa.Enum('clinical', 'ephys', name='observation_source', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('measure', sa.String(length=32), nullable=False),
    sa.Column('muscle', sa.String(length=64), nullable=False),
    sa.Column('side', sa.Enum('left', 'right', 'none', name='observation_side', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('source_file', sa.Text(), nullable=True),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_observations_visit_fk_visits'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_observations')),
    sa.UniqueConstraint('visit_fk', 'measure', 'muscle', 'side', name=op.f('uq_observations_visit_fk_measure_muscle_side'))
    )
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_observations_visit_fk'), ['visit_fk'], unique=False)

    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_fk', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=True),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('study_date', sa.Date(), nullable=True),
    sa.Column('study_time', sa.String(length=32), nullable=True),
    sa.Column('accession_number', sa.String(length=64), nullable=True),
    sa.Column('study_description', sa.String(length=128), nullable=True),
    sa.Column('time_point_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_fk'], ['patients.id'], name=op.f('fk_studies_patient_fk_patients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_studies_visit_fk_visits'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('study_instance_uid', name=op.f('uq_studies_study_instance_uid'))
    )
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_studies_patient_fk'), ['patient_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_studies_visit_fk'), ['visit_fk'], unique=False)

    op.create_table('series',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_fk', sa.Integer(), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('series_description', sa.String(length=128), nullable=True),
    sa.Column('protocol_name', sa.String(length=128), nullable=True),
    sa.Column('frame_of_reference_uid', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.Enum('t2', 'dwi', 'result', 'other', name='series_kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('n_instances', sa.Integer(), nullable=False),
    sa.Column('first_received_at', sa.DateTime(), nullable=False),
    sa.Column('last_received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.id'], name=op.f('fk_series_study_fk_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_series')),
    sa.UniqueConstraint('series_instance_uid', name=op.f('uq_series_series_instance_uid'))
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_study_fk'), ['study_fk'], unique=False)

    op.create_table('instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_fk', sa.Integer(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=True),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('file_path', sa.Text(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=True),
    sa.Column('peer_address', sa.String(length=64), nullable=True),
    sa.Column('conflict', sa.Boolean(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('size_bytes >= 0', name=op.f('ck_instances_size_nonnegative')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_instances_version_positive')),
    sa.ForeignKeyConstraint(['series_fk'], ['series.id'], name=op.f('fk_instances_series_fk_series'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_instances')),
    sa.UniqueConstraint('sop_instance_uid', 'version', name=op.f('uq_instances_sop_instance_uid_version'))
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_series_fk'), ['series_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_sop_instance_uid'), ['sop_instance_uid'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=64), nullable=False),
    sa.Column('instance_fk', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('pending', 'sent', 'failed', name='outbox_state', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try_at', sa.DateTime(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['instance_fk'], ['instances.id'], name=op.f('fk_outbox_instance_fk_instances'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('destination', 'instance_fk', name=op.f('uq_outbox_destination_instance_fk'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_instance_fk'), ['instance_fk'], unique=False)
        batch_op.create_index('ix_outbox_state_next_try', ['state', 'next_try_at'], unique=False)

    op.create_table('result_objects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('visit_fk', sa.Integer(), nullable=True),
    sa.Column('kind', sa.Enum('stitched_t2', 'adc_map', 'seg', 'sr', 'report_pdf', name='result_kind', native_enum=False, create_constraint=True), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('replaces_uid', sa.String(length=64), nullable=True),
    sa.Column('instance_fk', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['instance_fk'], ['instances.id'], name=op.f('fk_result_objects_instance_fk_instances'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['visit_fk'], ['visits.id'], name=op.f('fk_result_objects_visit_fk_visits'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_result_objects')),
    sa.UniqueConstraint('sop_instance_uid', name=op.f('uq_result_objects_sop_instance_uid'))
    )
    with op.batch_alter_table('result_objects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_result_objects_visit_fk'), ['visit_fk'], unique=False)



def downgrade() -> None:
    """Drop every table."""
    with op.batch_alter_table('result_objects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_result_objects_visit_fk'))

    op.drop_table('result_objects')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_state_next_try')
        batch_op.drop_index(batch_op.f('ix_outbox_instance_fk'))

    op.drop_table('outbox')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instances_sop_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_instances_series_fk'))

    op.drop_table('instances')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_study_fk'))

    op.drop_table('series')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_studies_visit_fk'))
        batch_op.drop_index(batch_op.f('ix_studies_patient_fk'))

    op.drop_table('studies')
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_observations_visit_fk'))

    op.drop_table('observations')
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_measurements_visit_fk'))

    op.drop_table('measurements')
    with op.batch_alter_table('visits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_visits_subject_fk'))

    op.drop_table('visits')
    with op.batch_alter_table('subject_patient_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subject_patient_ids_subject_fk'))

    op.drop_table('subject_patient_ids')
    op.drop_table('subjects')
    op.drop_table('stats_runs')
    op.drop_table('patients')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_kind')

    op.drop_table('jobs')
