"""The stage runtime: the loop every stage shares (DESIGN.md, "The stage contract").

A stage supplies its input topic, a decode type, a handler and the upserts that store
its result; the runtime decodes, short-circuits redeliveries, runs the handler in a
worker thread, stores, produces and only then commits.
"""
