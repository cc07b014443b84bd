"""Audit trail models. AuditEntry (rows for admin-only routes) arrives with the audit issue."""
