"""Cohort statistics: assembly, models, tables, figures and the report."""
