"""Admin work on the data: CRM CSV import, archive repair."""
