"""invoicesync: Campfire invoices managed like infrastructure (declare, plan, apply exactly once)."""

__version__ = "0.1.0"
