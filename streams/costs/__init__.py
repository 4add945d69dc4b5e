"""The cost aggregator: a Faust app from ``vi.costs`` to the ledger, spend tables and budgets."""
